"""Transport and handler failures: persisted retries, per-key blocking, dead letters, DLQ retry."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import TransportError
from convergent.messages import Message
from convergent.outbox import Consumer, Relay, dlq, emit
from convergent.retry import RetryPolicy, zero_delays
from convergent.store import Store
from convergent.store.schema import dead_letters, outbox
from convergent.transports import Transport
from convergent.transports.embedded import EmbeddedTransport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import (
    consume_until,
    create_effects,
    drain_outbox,
    effect_rows,
    record_effect,
)


class RefusingKey(EmbeddedTransport):
    """The embedded broker, refusing every message of one key."""

    def __init__(self, store: Store, bad_key: str) -> None:
        super().__init__(store)
        self.bad_key = bad_key
        self.sent: list[Message] = []

    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        good = [m for m in messages if m.key != self.bad_key]
        results = iter(await super().publish(good) if good else [])
        self.sent.extend(good)
        return [
            TransportError("broker said no") if m.key == self.bad_key else next(results)
            for m in messages
        ]


@pytest.fixture(autouse=True)
def no_backoff() -> object:
    with zero_delays():
        yield


async def emit_keys(store: Store, topic: str, keys: list[str]) -> None:
    async with store.begin() as conn:
        for i, key in enumerate(keys):
            await emit(conn, topic, key, "tick", {"seq": i})


async def dead(store: Store) -> list[sa.Row]:  # type: ignore[type-arg]
    async with store.read() as conn:
        return list((await conn.execute(sa.select(dead_letters))).all())


async def test_a_failing_key_blocks_only_itself_then_dead_letters(store: Store) -> None:
    topic = unique_topic()
    transport = RefusingKey(store, "bad")
    relay = Relay(store, transport, retry=RetryPolicy(max_attempts=3))
    await emit_keys(store, topic.name, ["bad"])
    await relay.run_once()  # first failure
    await emit_keys(store, topic.name, ["good", "bad", "good"])
    await relay.run_once()
    assert [m.key for m in transport.sent] == ["good", "good"]
    async with store.read() as conn:
        waiting = (await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all()
    assert [(r.key, r.attempts) for r in waiting] == [("bad", 2), ("bad", 0)]  # 2nd waits
    await relay.run_once()
    [letter] = await dead(store)
    assert (letter.source, letter.key, letter.attempts) == ("outbox", "bad", 3)
    assert "broker said no" in letter.reason
    await relay.run_once()  # the next message of the key is free to go (and fails too)
    async with store.read() as conn:
        assert (await conn.execute(sa.select(outbox.c.attempts))).scalars().all() == [1]


async def test_a_retried_outbox_dead_letter_is_published_again(store: Store) -> None:
    topic = unique_topic()
    relay = Relay(store, RefusingKey(store, "bad"), retry=RetryPolicy(max_attempts=1))
    await emit_keys(store, topic.name, ["bad"])
    await relay.run_once()
    [letter] = await dead(store)
    await dlq.retry(store, str(letter.id))
    fixed = EmbeddedTransport(store)
    sent: list[Message] = []
    original = fixed.publish

    async def spy(messages: Sequence[Message]) -> list[BaseException | None]:
        sent.extend(messages)
        return await original(messages)

    fixed.publish = spy  # type: ignore[method-assign]
    await drain_outbox(Relay(store, fixed, holder=relay.leases.holder))  # same process
    assert [m.id for m in sent] == [letter.payload["envelope"]["id"]]
    [after] = await dead(store)
    assert after.status == "retried"


async def test_a_failing_handler_is_retried_then_dead_lettered_and_the_rest_flows(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await create_effects(broker_store)
    await emit_keys(broker_store, topic.name, ["poison", "fine"])
    await drain_outbox(Relay(broker_store, transport))

    async def handler(conn: AsyncConnection, message: Message) -> None:
        if message.key == "poison":
            raise ValueError("cannot handle this")
        await record_effect(conn, message)

    consumer = Consumer(
        broker_store,
        transport,
        topic,
        f"g-{topic.name}",
        handler,
        retry=RetryPolicy(max_attempts=2),
    )
    try:
        await consume_until(consumer, broker_store, 1)
        deadline = 50
        while not await dead(broker_store) and deadline:
            await consumer.run_once(timeout=0.3)
            deadline -= 1
    finally:
        await consumer.close()
    [letter] = await dead(broker_store)
    assert (letter.source, letter.key, letter.attempts) == ("consumer", "poison", 2)
    assert [r.key for r in await effect_rows(broker_store)] == ["fine"]


async def test_discarding_a_dead_letter_marks_it_without_retrying(store: Store) -> None:
    topic = unique_topic()
    relay = Relay(store, RefusingKey(store, "bad"), retry=RetryPolicy(max_attempts=1))
    await emit_keys(store, topic.name, ["bad"])
    await relay.run_once()
    [letter] = await dead(store)
    await dlq.discard(store, str(letter.id))
    [after] = await dead(store)
    assert after.status == "discarded"
    async with store.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == 0


async def test_a_database_outage_spends_no_attempts_and_nothing_is_dead_lettered(
    broker_store: Store, transport: Transport
) -> None:
    """The handler's database is away for longer than its retry budget: the consumer holds the
    message until the database answers, then handles it once; nothing goes to the DLQ."""
    from convergent.errors import StoreUnavailable

    topic = unique_topic()
    await create_effects(broker_store)
    await emit_keys(broker_store, topic.name, ["during-outage", "after"])
    await drain_outbox(Relay(broker_store, transport))
    outage = {"left": 4}  # more failures than max_attempts

    async def handler(conn: AsyncConnection, message: Message) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise StoreUnavailable("cannot reach the database: restarting")
        await record_effect(conn, message)

    consumer = Consumer(
        broker_store,
        transport,
        topic,
        f"g-{topic.name}",
        handler,
        retry=RetryPolicy(max_attempts=2),
    )
    try:
        await consume_until(consumer, broker_store, 2)
    finally:
        await consumer.close()
    assert outage["left"] == 0
    assert not await dead(broker_store)
    assert sorted(r.key for r in await effect_rows(broker_store)) == ["after", "during-outage"]


async def test_the_relay_gives_up_at_the_policy_deadline(store: Store) -> None:
    """Attempts are left, but the message is older than the deadline: it is dead-lettered."""
    topic = unique_topic()
    relay = Relay(
        store, RefusingKey(store, "bad"), retry=RetryPolicy(max_attempts=100, deadline=60)
    )
    await emit_keys(store, topic.name, ["bad", "bad"])
    async with store.begin() as conn:  # the first was written an hour ago, the second just now
        first = await conn.scalar(sa.select(outbox.c.id).order_by(outbox.c.id).limit(1))
        await conn.execute(
            sa.update(outbox)
            .where(outbox.c.id == first)
            .values(created_at=store.clock.now() - timedelta(hours=1))
        )
    await relay.run_once()
    [letter] = await dead(store)
    assert (letter.key, letter.attempts) == ("bad", 1)
    await relay.run_once()  # the second is within its deadline: retried, not dead-lettered
    async with store.read() as conn:
        assert (await conn.execute(sa.select(outbox.c.attempts))).scalars().all() == [2]
    assert len(await dead(store)) == 1
