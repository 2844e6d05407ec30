"""The embedded log's upkeep: compaction keeps the latest state per key, retention drops old."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from convergent.messages import Message
from convergent.store import Store
from convergent.store.schema import log_entries
from convergent.transports.embedded import EmbeddedTransport
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
