"""The embedded log's upkeep: compaction keeps the latest state per key, retention drops old."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from convergent.messages import Message
from convergent.store import Store
from convergent.store.schema import log_entries
from convergent.transports.base import Delivery
from convergent.transports.embedded import EmbeddedSubscription, EmbeddedTransport
from tests.contract.transports.brokers import unique_topic


async def entries(store: Store) -> list[tuple[str, object]]:
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(log_entries.c.key, log_entries.c.envelope).order_by(log_entries.c.position)
        )
        return [(r.key, r.envelope["data"]) for r in rows]


async def test_compaction_keeps_only_the_latest_state_of_each_entity(store: Store) -> None:
    topic = unique_topic(kind="entity", partitions=1)
    transport = EmbeddedTransport(store)
    await transport.publish(
        [
            Message(topic.name, "a", "t", {"v": 1}),
            Message(topic.name, "b", "t", {"v": 1}),
            Message(topic.name, "a", "t", {"v": 2}),
            Message(topic.name, "b", "t", None),
        ]
    )
    later = store.clock.now() + timedelta(seconds=1)
    assert await transport.compact(topic, older_than=later) == 2
    assert await entries(store) == [("a", {"v": 2}), ("b", None)]


async def test_retention_drops_entries_older_than_the_cutoff(store: Store) -> None:
    topic = unique_topic()
    transport = EmbeddedTransport(store)
    await transport.publish([Message(topic.name, "a", "t", {"v": 1})])
    assert await transport.apply_retention(store.clock.now() - timedelta(hours=1)) == 0
    assert await transport.apply_retention(store.clock.now() + timedelta(seconds=1)) == 1
    assert await entries(store) == []


async def test_a_consumer_reads_on_appends_to_its_own_topic_not_on_every_append(
    store: Store,
) -> None:
    """Each append wakes the subscriptions with the topic it wrote: a consumer of another
    topic goes on sleeping instead of reading the log for nothing."""
    ours, other = unique_topic(), unique_topic()
    transport = EmbeddedTransport(store)
    subscription = await transport.subscribe(ours, "group-hints")
    assert isinstance(subscription, EmbeddedSubscription)
    polls = 0
    real_poll = subscription._poll

    async def counted(max_messages: int) -> list[Delivery]:
        nonlocal polls
        polls += 1
        return await real_poll(max_messages)

    subscription._poll = counted  # type: ignore[method-assign]
    fetching = asyncio.create_task(subscription.fetch(10, timeout=5.0))
    for n in range(30):  # appends to another topic: hints that are not for us
        await transport.publish([Message(other.name, f"k{n}", "t", {"n": n})])
    await transport.publish([Message(ours.name, "k", "t", {"n": 1})])
    got = await asyncio.wait_for(fetching, 5.0)
    assert [d.message.data for d in got] == [{"n": 1}]
    # the first read, the one our append woke, and at most a fallback poll or two
    assert polls <= 4, polls
    await subscription.close()
