"""The relay reads due rows once per wake-up, not once per lane; a backlog still drains in order,
on every transport and database."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from convergent.outbox import Consumer, Relay, emit
from convergent.store import Store
from convergent.transports import Transport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import (
    consume_until,
    create_effects,
    drain_outbox,
    effect_rows,
    outbox_count,
    record_effect,
)


def counting_reads(relay: Relay) -> list[int]:
    """How many partitions each read of due rows covered, one entry per read."""
    reads: list[int] = []
    due = relay._due

    async def counted(conn: Any, partitions: list[int]) -> list[Any]:
        reads.append(len(partitions))
        return await due(conn, partitions)

    relay._due = counted  # type: ignore[method-assign]
    return reads


async def test_a_few_new_rows_take_one_read_and_a_backlog_drains_in_order(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await create_effects(broker_store)
    relay = Relay(broker_store, transport, batch_size=10, lanes=2)
    reads = counting_reads(relay)
    async with broker_store.begin() as conn:
        for seq in range(3):
            await emit(conn, topic.name, f"k{seq}", "tick", {"seq": seq})
    assert await relay.run_once() == 3
    assert await outbox_count(broker_store) == 0
    assert len(reads) == 1  # not one per lane: most wake-ups bring a few rows
    held = len(relay.leases.held)
    assert reads == [held]

    reads.clear()
    async with broker_store.begin() as conn:  # a backlog: more than a batch
        for seq in range(3, 13):
            for k in range(4):
                await emit(conn, topic.name, f"k{k}", "tick", {"seq": seq})
    await drain_outbox(relay)
    assert reads[0] == held  # the first batch over every partition, then the lanes
    assert len(reads) > 1
    assert all(n < held for n in reads[1:])

    consumer = Consumer(broker_store, transport, topic, f"g-{topic.name}", record_effect)
    try:
        await consume_until(consumer, broker_store, 43)
    finally:
        await consumer.close()
    per_key: dict[str, list[int]] = defaultdict(list)
    for row in await effect_rows(broker_store):
        per_key[row.key].append(row.seq)
    assert sum(map(len, per_key.values())) == 43
    assert all(seqs == sorted(seqs) for seqs in per_key.values())
