"""A worker SUBPROCESS SIGKILLed in the middle of a tick: a new one fires the tick, and its run
starts and executes exactly once (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.store import Store
from convergent.store.schema import runs, schedule_ticks, schedules
from convergent.workflows import result
from convergent.workflows.schedules import sync_schedules
from tests.integration.workflows import sched_flows
from tests.integration.workflows.conftest import until

ROOT = Path(__file__).resolve().parents[3]


def spawn(database_url: str, log: Path, faults: str = "") -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WF_TEST_DATABASE_URL": database_url,
        "CONVERGENT_FAULTS": faults,
    }
    command = [
        sys.executable,
        "-m",
        "convergent",
        "worker",
        "--database-url",
        database_url,
        "--import",
        "tests.integration.workflows.sched_flows",
        "--lease-seconds",
        "1",
        "--poll-interval",
        "0.1",
        "--no-relay",
        "--no-webhooks",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)


@pytest.fixture
async def sched_db(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Store, str]]:
    """The schedule declared and its next tick moved into the past: it is due now."""
    monkeypatch.setenv("WF_TEST_DATABASE_URL", database_url)
    async with Store(database_url) as store:
        async with store.begin() as conn:
            await conn.run_sync(sched_flows.sched_metadata.create_all)
        await sync_schedules(store, [sched_flows.nightly])
        due = sched_flows.nightly.ticks.at_or_before(store.clock.now())
        async with store.begin() as conn:
            await conn.execute(sa.update(schedules).values(next_at=due))
        yield store, database_url
    for cached in sched_flows._stores.values():
        await cached.close()
    sched_flows._stores.clear()


async def count(store: Store, table: sa.Table) -> int:
    async with store.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


@pytest.mark.parametrize(
    "point", ["schedule.after_tick_before_commit", "schedule.after_tick_committed"]
)
async def test_a_worker_killed_mid_tick_is_replaced_and_the_tick_runs_once(
    sched_db: tuple[Store, str], point: str, tmp_path: Path
) -> None:
    store, url = sched_db
    log = tmp_path / "worker.log"
    crashing = spawn(url, log, faults=point)
    assert crashing.wait(timeout=60) == -signal.SIGKILL, log.read_text()
    # before the commit nothing is left; after it the run waits for a worker
    assert await count(store, runs) == (0 if point.endswith("before_commit") else 1)
    replacement = spawn(url, log)
    try:

        async def one_run() -> bool:
            return await count(store, runs) == 1

        await until(one_run, timeout=60)
        async with store.read() as conn:
            run_id = await conn.scalar(sa.select(runs.c.id))
        assert run_id is not None
        assert await result(store, run_id, wait=60) == "nightly"
    finally:
        if replacement.poll() is None:
            replacement.send_signal(signal.SIGTERM)
        replacement.wait(timeout=20)
    assert await count(store, runs) == 1
    assert await count(store, schedule_ticks) == 1
    assert await count(store, sched_flows.ticks_seen) == 1
