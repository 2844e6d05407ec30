"""The outbox and crashes: nothing before commit, nothing lost after it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.outbox import Consumer, Relay, emit
from convergent.store import Store
from convergent.store.schema import log_entries, outbox
from convergent.transports import Transport
from convergent.transports.embedded import EmbeddedTransport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import (
    consume_until,
    create_effects,
    drain_outbox,
    effect_rows,
    outbox_count,
    record_effect,
)


def run_convergent(args: list[str], database_url: str, faults: str, tmp_path: Path) -> int:
    env = {**os.environ, "CONVERGENT_DATABASE_URL": database_url, "CONVERGENT_FAULTS": faults}
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=60
        )
    return proc.returncode


async def test_a_rolled_back_transaction_leaves_no_outbox_row(store: Store) -> None:
    topic = unique_topic()
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await emit(conn, topic, "k", "tick", {"seq": 1})
            raise RuntimeError("the business write failed")
    assert await outbox_count(store) == 0


async def test_an_uncommitted_event_is_invisible_to_the_relay(store: Store) -> None:
    topic = unique_topic()
    async with store.begin() as conn:
        await emit(conn, topic, "k", "tick", {"seq": 1})
        async with store.read() as other:
            assert await other.scalar(sa.select(sa.func.count()).select_from(outbox)) == 0
    assert await outbox_count(store) == 1


async def test_a_crash_after_insert_before_commit_publishes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    script = (
        "import asyncio\n"
        "from convergent.store import Store\n"
        "from convergent.outbox import emit\n"
        "async def main():\n"
        "    store = Store()\n"
        "    async with store.begin() as conn:\n"
        "        await emit(conn, 'crash-topic', 'k', 'tick', {'seq': 1})\n"
        "asyncio.run(main())\n"
    )
    script = script.replace(
        "'crash-topic'",
        "__import__('convergent.topics').topics.declare_topic('crash-topic')",
    )
    code = run_convergent(
        ["-c", script], database_url, "outbox.after_insert_before_commit", tmp_path
    )
    assert code == -9
    store = Store(database_url)
    try:
        assert await outbox_count(store) == 0
    finally:
        await store.close()


async def test_a_relay_killed_between_publish_and_mark_still_delivers_once(
    broker: tuple[str, str], broker_store: Store, transport: Transport, tmp_path: Path
) -> None:
    topic = unique_topic()
    store = broker_store
    await create_effects(store)
    async with store.begin() as conn:
        await emit(conn, topic, "k", "tick", {"seq": 1})
    code = run_convergent(
        ["-m", "convergent", "relay", "--broker-url", broker[0]],
        broker[1],
        "relay.after_publish_before_mark",
        tmp_path,
    )
    assert code == -9, (tmp_path / "child.log").read_text()
    assert await outbox_count(store) == 1  # published, but not marked
    store.clock = _Later(store.clock)  # the dead relay's lease has expired
    await drain_outbox(Relay(store, transport))  # publishes it again: at least once...
    consumer = Consumer(store, transport, topic, f"g-{topic.name}", record_effect)
    try:
        await consume_until(consumer, store, 1)
    finally:
        await consumer.close()
    assert len(await effect_rows(store)) == 1  # ...and the inbox makes the effect once


class _Later:
    """The system clock, a minute ahead: the crashed relay's 15 s lease has expired."""

    def __init__(self, clock: object) -> None:
        self.clock = clock

    def now(self):  # type: ignore[no-untyped-def]
        from datetime import timedelta

        return self.clock.now() + timedelta(minutes=1)  # type: ignore[attr-defined]

    async def sleep(self, seconds: float) -> None:
        await self.clock.sleep(seconds)  # type: ignore[attr-defined]


async def test_a_row_that_commits_late_is_not_skipped(pg_url: str) -> None:
    """PostgreSQL only: SQLite has one writer, so commit order is id order there."""
    topic = unique_topic()
    store = Store(pg_url)
    transport = EmbeddedTransport(store)
    relay = Relay(store, transport)
    try:
        async with store.begin() as slow:
            await emit(slow, topic, "a", "tick", {"seq": 1})  # the lower id, committed last
            async with store.begin() as fast:
                await emit(fast, topic, "b", "tick", {"seq": 2})
            await drain_outbox(relay)
        await drain_outbox(relay)
        async with store.read() as conn:
            keys = (await conn.execute(sa.select(log_entries.c.key))).scalars().all()
        assert sorted(keys) == ["a", "b"]
    finally:
        await store.close()
