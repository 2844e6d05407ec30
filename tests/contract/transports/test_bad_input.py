"""Bad input never crashes a consumer: an unreadable message on the wire or a payload failing its
schema is dead-lettered with the reason; an unknown topic is a clear error. Every transport."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa

from convergent import dlq
from convergent.errors import ConvergentError, UnknownTopic
from convergent.ids import new_id
from convergent.messages import Message
from convergent.outbox import Consumer, declare_topic
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import dead_letters, log_entries
from convergent.topics import Topic
from convergent.transports import Transport
from tests.contract.transports.brokers import unique_topic
from tests.contract.transports.test_order_under_failure import applied, parked_count, until
from tests.integration.messages.helpers import create_effects, effect_rows, record_effect


async def inject_garbage(transport: Transport, store: Store, topic: Topic, key: str) -> None:
    """Put a message on the topic that is not a CloudEvent of ours (as a foreign producer or a
    damaged record would)."""
    kind = type(transport).__name__
    if kind == "EmbeddedTransport":
        stand_in = Message(topic.name, key, "t", {"seq": -1})
        await transport.publish([stand_in])
        async with store.begin() as conn:
            await conn.execute(
                sa.update(log_entries)
                .where(log_entries.c.message_id == stand_in.id)
                .values(envelope={"not": "an envelope"})
            )
    elif kind == "NatsTransport":
        from convergent.transports.nats import subject_for

        t: Any = transport
        await t.ensure_topic(topic)
        subject = subject_for(t.subject_base(topic.name), key, t.partitions[topic.name])
        await t.js.publish(subject, b"{not json", headers={"x-from": "elsewhere"})
    else:
        k: Any = transport
        await k.start()
        await k._producer.send_and_wait(topic.name, value=b"{not json", key=key.encode())


async def letters(store: Store) -> list[Any]:
    async with store.read() as conn:
        return list((await conn.execute(sa.select(dead_letters))).all())


async def test_an_unreadable_message_is_dead_lettered_and_the_consumer_goes_on(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await create_effects(broker_store)
    await transport.publish([Message(topic.name, "K", "tick", {"seq": 1})])
    await inject_garbage(transport, broker_store, topic, "K")
    await transport.publish(
        [Message(topic.name, "K", "tick", {"seq": 2}), Message(topic.name, "o", "tick", {"seq": 1})]
    )
    consumer = Consumer(broker_store, transport, topic, f"g-{topic.name}", record_effect)
    try:

        async def done() -> bool:
            """the good messages applied, the bad one dead-lettered"""
            return (
                len(await effect_rows(broker_store)) == 3 and len(await letters(broker_store)) > 0
            )

        await until(done, consumer)  # run_once raises on a crash: it never does
    finally:
        await consumer.close()
    assert await applied(broker_store) == {"K": [1, 2], "o": [1]}  # not parked behind it
    [letter] = await letters(broker_store)
    assert letter.reason.startswith("malformed message (")
    assert (letter.source, letter.key, letter.name) == ("consumer", "K", topic.name)
    assert "raw" in letter.payload
    with pytest.raises(ConvergentError, match="nothing to retry"):
        await dlq.retry(broker_store, letter.id)
    await dlq.discard(broker_store, letter.id)


@dataclasses.dataclass
class Shipped:
    order: int
    weight: float


async def test_a_payload_failing_its_schema_is_dead_lettered_at_once_and_parks_its_key(
    broker_store: Store, transport: Transport
) -> None:
    topic = declare_topic(f"t{new_id().replace('-', '')[-12:]}", Shipped, partitions=4)
    await transport.ensure_topic(topic)
    await create_effects(broker_store)
    await transport.publish(  # a producer that did not validate (emit would have refused it)
        [
            Message(topic.name, "K", "shipped", {"order": "not a number", "weight": 1}),
            Message(topic.name, "K", "shipped", {"order": 2, "weight": 1.5, "seq": 2}),
            Message(topic.name, "o", "shipped", {"order": 3, "weight": 2.0, "seq": 3}),
        ]
    )
    consumer = Consumer(
        broker_store,
        transport,
        topic,
        f"g-{topic.name}",
        record_effect,
        retry=RetryPolicy(max_attempts=5, initial_delay=30),  # a retry would take long
    )
    try:

        async def done() -> bool:
            """K parked behind the letter, the other key applied"""
            return (
                await parked_count(broker_store) == 2 and len(await effect_rows(broker_store)) > 0
            )

        await until(done, consumer)
    finally:
        await consumer.close()
    [letter] = await letters(broker_store)
    assert letter.attempts == 1  # no retries: it would fail the same way
    assert "SchemaViolation" in letter.reason
    assert await applied(broker_store) == {"o": [3]}


async def test_an_unknown_topic_is_a_clear_error(broker_store: Store, transport: Transport) -> None:
    with pytest.raises(UnknownTopic, match="declare_topic"):
        Consumer(broker_store, transport, "never-declared", "g", record_effect)
