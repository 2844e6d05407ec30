"""Seed 001 self-checks on every transport and database: once, in order, nothing lost."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from prometheus_client import REGISTRY

from convergent.messages import Message
from convergent.outbox import Consumer, Relay, emit
from convergent.store import Store
from convergent.transports import Transport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import (
    consume_until,
    create_effects,
    drain_outbox,
    effect_rows,
    record_effect,
)


async def emit_many(store: Store, topic: str, keys: int, per_key: int, start: int = 0) -> None:
    async with store.begin() as conn:
        for seq in range(start, start + per_key):
            for k in range(keys):
                await emit(conn, topic, f"k{k}", "tick", {"seq": seq})


def in_order_per_key(rows: list) -> bool:  # type: ignore[type-arg]
    per_key: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        per_key[r.key].append(r.seq)
    return all(seqs == sorted(seqs) for seqs in per_key.values())


async def test_committed_events_reach_the_consumer_once_in_order_per_key(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await create_effects(broker_store)
    await emit_many(broker_store, topic.name, keys=3, per_key=5)
    await drain_outbox(Relay(broker_store, transport))
    consumer = Consumer(broker_store, transport, topic, f"g-{topic.name}", record_effect)
    try:
        await consume_until(consumer, broker_store, 15)
    finally:
        await consumer.close()
    rows = await effect_rows(broker_store)
    assert len(rows) == 15
    assert in_order_per_key(rows)
    labels = {"group": f"g-{topic.name}", "topic": topic.name}
    observed = REGISTRY.get_sample_value("convergent_time_to_consistency_seconds_count", labels)
    assert observed == 15  # one time-to-consistency sample per applied message


async def test_a_duplicate_delivery_leaves_state_unchanged(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await create_effects(broker_store)
    message = Message(topic.name, "k", "tick", {"seq": 1})
    await transport.ensure_topic(topic)
    await transport.publish([message])
    await transport.publish([message])  # e.g. a relay that crashed before marking it
    consumer = Consumer(broker_store, transport, topic, f"g-{topic.name}", record_effect)
    try:
        await consume_until(consumer, broker_store, 1)
        await consumer.run_once(timeout=0.5)
    finally:
        await consumer.close()
    assert [r.message_id for r in await effect_rows(broker_store)] == [message.id]


async def test_a_consumer_that_was_down_catches_up_with_nothing_lost(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await create_effects(broker_store)
    relay = Relay(broker_store, transport)
    consumer = Consumer(broker_store, transport, topic, f"g-{topic.name}", record_effect)
    try:
        await emit_many(broker_store, topic.name, keys=2, per_key=3)
        await drain_outbox(relay)
        await consume_until(consumer, broker_store, 6)
        await consumer.close()  # the consumer goes down...
        await emit_many(broker_store, topic.name, keys=2, per_key=5, start=3)
        await drain_outbox(relay)
        await consume_until(consumer, broker_store, 16)  # ...and comes back
    finally:
        await consumer.close()
    rows = await effect_rows(broker_store)
    assert len(rows) == 16
    assert len({r.message_id for r in rows}) == 16
    assert in_order_per_key(rows)


async def test_two_relays_keep_order_per_key(broker_store: Store, transport: Transport) -> None:
    topic = unique_topic()
    await create_effects(broker_store)
    stop = asyncio.Event()
    relays = [
        Relay(broker_store, transport, batch_size=7, poll_interval=0.05, lease_seconds=1.5)
        for _ in range(2)
    ]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while not all(len(r.leases.held) == 8 for r in relays):  # they split the 16 partitions
            assert asyncio.get_running_loop().time() < deadline, [r.leases.held for r in relays]
            await asyncio.sleep(0.05)
        for seq in range(0, 30, 3):  # keep emitting while both relays run
            await emit_many(broker_store, topic.name, keys=4, per_key=3, start=seq)
        consumer = Consumer(broker_store, transport, topic, f"g-{topic.name}", record_effect)
        try:
            await consume_until(consumer, broker_store, 120)
        finally:
            await consumer.close()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    rows = await effect_rows(broker_store)
    assert len(rows) == 120
    assert in_order_per_key(rows)
    assert sum(r.published for r in relays) == 120
    assert all(r.published for r in relays), "both relays should have held partitions"
