"""Retention and compaction: the maintenance round keeps every table bounded, in small batches."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.maintenance import Maintenance, Retention, purge
from convergent.messages import Message
from convergent.runtime import LoopOptions, standard_loops
from convergent.store import Store
from convergent.store.schema import (
    idempotency_keys,
    inbox,
    log_entries,
    log_heads,
    replies,
    run_events,
    run_steps,
    runs,
)
from convergent.transports.embedded import EmbeddedTransport
from tests.contract.transports.brokers import unique_topic

HOUR = 3600.0


def retention(**overrides: object) -> Retention:
    values: dict[str, object] = {
        "inbox": HOUR,
        "replies": HOUR,
        "runs": HOUR,
        "webhooks": HOUR,
        "log": HOUR,
        "compaction_lag": 60.0,
        "tombstones": HOUR,
        "batch_size": 500,
    }
    values.update(overrides)
    return Retention(**values)  # type: ignore[arg-type]


@pytest.fixture
async def clocked(database_url: str) -> AsyncIterator[tuple[Store, ManualClock]]:
    clock = ManualClock(datetime.now(UTC))
    store = Store(database_url, clock=clock)
    try:
        yield store, clock
    finally:
        await store.close()


async def count(store: Store, table: sa.Table, *where: object) -> int:
    async with store.read() as conn:
        stmt = sa.select(sa.func.count()).select_from(table).where(*where)  # type: ignore[arg-type]
        return int(await conn.scalar(stmt) or 0)


async def test_100k_messages_through_a_short_retention_topic_keep_the_tables_bounded(
    clocked: tuple[Store, ManualClock],
) -> None:
    """20 rounds of 5,000 messages (and their inbox records) ten seconds apart, retention 15 s:
    after each maintenance round at most two rounds' worth is left."""
    store, clock = clocked
    topic = unique_topic()
    transport = EmbeddedTransport(store)
    keep = retention(inbox=15.0, log_topics={topic.name: 15.0}, batch_size=1000)
    per_round = 5000
    for n in range(20):
        batch = [Message(topic.name, f"k{i % 50}", "tick", {"seq": i}) for i in range(per_round)]
        assert await transport.publish(batch) == [None] * per_round
        async with store.begin() as conn:  # what the group's consumer recorded handling them
            await conn.execute(
                sa.insert(inbox),
                [{"consumer": "g", "message_id": m.id, "received_at": clock.now()} for m in batch],
            )
        clock.advance(10)
        done = await purge(store, retention=keep)
        assert await count(store, log_entries, log_entries.c.topic == topic.name) <= 2 * per_round
        assert await count(store, inbox) <= 2 * per_round
        if n >= 2:
            assert done["log entries"] == per_round
            assert done["inbox records"] == per_round
    async with store.read() as conn:
        positions = await conn.scalar(
            sa.select(sa.func.sum(log_heads.c.next_position)).where(log_heads.c.topic == topic.name)
        )
    assert positions == 100_000  # every message went through the log


async def test_entity_topics_are_compacted_to_the_latest_per_key_and_tombstones_go_later(
    clocked: tuple[Store, ManualClock],
) -> None:
    store, clock = clocked
    topic = unique_topic(kind="entity")
    other = unique_topic()  # an event topic beside it: retention, not compaction
    transport = EmbeddedTransport(store)
    await transport.publish(
        [Message(topic.name, "c1", "customer", {"v": v}) for v in (1, 2, 3)]
        + [Message(topic.name, "c2", "customer", {"v": 1}), Message(topic.name, "c2", "gone", None)]
        + [Message(other.name, "e", "tick", {"v": 1})]
    )
    keep = retention(compaction_lag=60.0, tombstones=HOUR, log=10 * HOUR)
    assert (await purge(store, retention=keep))["log entries compacted"] == 0  # within the lag
    clock.advance(120)
    dry = await purge(store, retention=keep, dry_run=True)
    assert dry["log entries compacted"] == 3  # c1 v1, v2; c2 v1
    assert await count(store, log_entries) == 6  # a dry run deletes nothing
    done = await purge(store, retention=keep)
    assert (done["log entries compacted"], done["log tombstones"]) == (3, 0)
    sub = await transport.subscribe(topic, "new-group")
    try:
        seen = [(d.message.key, d.message.data) for d in await sub.fetch(100, 1.0)]
    finally:
        await sub.close()
    assert sorted(seen, key=str) == sorted([("c1", {"v": 3}), ("c2", None)], key=str)
    clock.advance(HOUR)
    assert (await purge(store, retention=keep))["log tombstones"] == 1
    async with store.read() as conn:
        left = (await conn.execute(sa.select(log_entries.c.topic, log_entries.c.key))).all()
    assert sorted(left) == sorted([(topic.name, "c1"), (other.name, "e")])


async def test_finished_runs_replies_and_expired_keys_go_and_the_rest_stays(
    clocked: tuple[Store, ManualClock],
) -> None:
    store, clock = clocked
    now = clock.now()
    done_run, live_run = uuid.uuid4(), uuid.uuid4()
    async with store.begin() as conn:
        for rid, status in ((done_run, "completed"), (live_run, "running")):
            await conn.execute(
                sa.insert(runs).values(
                    id=rid,
                    workflow="w",
                    key=str(rid),
                    status=status,
                    args={},
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                sa.insert(run_steps).values(
                    run_id=rid,
                    seq=0,
                    kind="step",
                    name="s",
                    status="completed",
                    idempotency_key="x",
                    updated_at=now,
                )
            )
            await conn.execute(
                sa.insert(run_events).values(
                    id=uuid.uuid4(), run_id=rid, name="e", dedupe_key="d", created_at=now
                )
            )
        await conn.execute(
            sa.insert(replies).values(
                correlation_id="c", topic="t", key="k", envelope={}, received_at=now
            )
        )
        await conn.execute(
            sa.insert(idempotency_keys).values(
                scope="s",
                key="k",
                fingerprint="f",
                status="completed",
                created_at=now,
                expires_at=now,
            )
        )
    clock.advance(2 * HOUR)
    done = await purge(store, retention=retention())
    assert {k: done[k] for k in ("finished runs", "run checkpoints", "run events")} == {
        "finished runs": 1,
        "run checkpoints": 1,
        "run events": 1,
    }
    assert (done["replies"], done["idempotency keys"]) == (1, 1)
    assert await count(store, runs) == 1  # the running one
    assert await count(store, run_steps) == 1
    assert await count(store, run_events) == 1


async def test_the_standard_loops_include_the_maintenance_loop(store: Store) -> None:
    loops = standard_loops(store, options=LoopOptions(workflows=False, relay=False, gauges=False))
    [maintenance] = [loop for loop in loops if isinstance(loop, Maintenance)]
    done = await maintenance.run_once()
    assert maintenance.rounds == 1
    assert set(done) >= {"idempotency keys", "inbox records", "log entries", "finished runs"}


def test_convergent_purge_dry_run_and_purge(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"}
    env["CONVERGENT_DATABASE_URL"] = database_url
    dry = subprocess.run(
        [sys.executable, "-m", "convergent", "purge", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would delete 0 inbox records" in dry.stdout
    real = subprocess.run(
        [sys.executable, "-m", "convergent", "purge", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert real.returncode == 0, real.stderr
    assert '"dry_run": false' in real.stdout


async def test_a_group_behind_the_retention_skips_ahead_to_what_is_left(
    clocked: tuple[Store, ManualClock],
) -> None:
    store, clock = clocked
    topic = unique_topic(partitions=1)
    transport = EmbeddedTransport(store)
    await transport.publish([Message(topic.name, "k", "tick", {"seq": i}) for i in range(3)])
    sub = await transport.subscribe(topic, "behind")
    try:
        [first, *_] = await sub.fetch(1, 1.0)
        await first.ack()  # the group handled seq 0, then fell behind
        clock.advance(HOUR)
        await transport.publish([Message(topic.name, "k", "tick", {"seq": i}) for i in (3, 4)])
        done = await purge(store, retention=retention(log_topics={topic.name: HOUR / 2}))
        assert done["log entries"] == 3
        seen = [d.message.data["seq"] for d in await sub.fetch(10, 1.0)]
    finally:
        await sub.close()
    assert seen == [3, 4]


async def test_the_log_of_a_topic_this_process_does_not_know_is_left_alone(
    clocked: tuple[Store, ManualClock],
) -> None:
    """It may be an entity topic declared elsewhere: its latest states must not expire."""
    store, clock = clocked
    transport = EmbeddedTransport(store)
    name = f"undeclared{uuid.uuid4().hex[:8]}"
    await transport.publish([Message(name, "c1", "customer", {"v": 1})])
    clock.advance(10 * HOUR)
    assert (await purge(store, retention=retention(log=HOUR)))["log entries"] == 0
    assert await count(store, log_entries, log_entries.c.topic == name) == 1
    named = retention(log=HOUR, log_topics={name: HOUR})  # unless named explicitly
    assert (await purge(store, retention=named))["log entries"] == 1
