"""Fleet queues on SQLite and PostgreSQL: priority order, a rate limit on a manual clock, a global
concurrency limit held by two worker processes; bad declarations name the fix."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.errors import ConfigurationError
from convergent.store import Store
from convergent.workflows import WorkflowContext, enqueue, list_runs, result, submit, workflow
from convergent.workflows.queues import fleet_queue
from tests.integration.workflows import queue_flows
from tests.integration.workflows.conftest import running, until

ROOT = Path(__file__).resolve().parents[3]

ORDER: list[str] = []

fleet_queue("tests-prio", concurrency=1)
fleet_queue("tests-rated", rate_limit=2, per=60)


@workflow(name="tests.queues.ordered", queue="tests-prio")
async def ordered(ctx: WorkflowContext, label: str) -> None:
    ORDER.append(label)


@workflow(name="tests.queues.rated", queue="tests-rated")
async def rated(ctx: WorkflowContext, n: int) -> int:
    return n


async def completed(store: Store, name: str) -> int:
    return sum(r.status == "completed" for r in await list_runs(store, workflow=name))


async def test_higher_priority_runs_are_claimed_first(mstore: Store) -> None:
    ORDER.clear()
    async with mstore.begin() as conn:
        for label, priority in (("low-1", 0), ("low-2", 0), ("high", 5), ("middle", 2)):
            await enqueue(conn, ordered, label, priority=priority)
    async with running(mstore, queues={"tests-prio": 4}):

        async def all_ran() -> bool:
            return len(ORDER) == 4

        await until(all_ran)
    assert ORDER[:2] == ["high", "middle"]


async def test_a_rate_limit_starts_so_many_runs_per_period(
    mstore: Store, clock: ManualClock
) -> None:
    for n in range(5):
        await submit(mstore, rated, n)
    async with running(mstore, queues={"tests-rated": 10}) as worker:
        await until(lambda: _exactly(mstore, 2))
        assert await worker.claim_due_runs() == 0  # the bucket is empty until time passes
        clock.advance(30)  # half a period: one more token
        await until(lambda: _exactly(mstore, 3))
        clock.advance(60)
        await until(lambda: _exactly(mstore, 5))


async def _exactly(store: Store, n: int) -> bool:
    return await completed(store, rated.name) == n


def test_bad_fleet_queue_declarations_name_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="concurrency=N and/or rate_limit=N"):
        fleet_queue("bad")
    with pytest.raises(ConfigurationError, match="at least 1"):
        fleet_queue("bad", concurrency=0)
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        fleet_queue("bad", rate_limit=5, per=0)


# -- two worker processes ----------------------------------------------------------------------


@pytest.fixture
async def spans_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    monkeypatch.setenv("WF_TEST_DATABASE_URL", database_url)
    async with Store(database_url) as store:
        async with store.begin() as conn:
            await conn.run_sync(queue_flows.queue_metadata.create_all)
        yield store
    for cached in queue_flows._stores.values():
        await cached.close()
    queue_flows._stores.clear()


def spawn(database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WF_TEST_DATABASE_URL": database_url,
    }
    command = [
        *(sys.executable, "-m", "convergent", "worker", "--database-url", database_url),
        *("--import", "tests.integration.workflows.queue_flows", "--queues", "tests-fleet=2"),
        *("--poll-interval", "0.05", "--no-relay", "--no-webhooks", "--no-maintenance"),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)


async def test_two_worker_processes_share_the_queues_concurrency_limit(
    spans_db: Store, database_url: str, tmp_path: Path
) -> None:
    store = spans_db
    workers = [spawn(database_url, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        ids = [await submit(store, queue_flows.busy_run, 0.3) for _ in range(12)]
        for run_id in ids:
            await result(store, run_id, wait=60)
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            proc.wait(timeout=20)
    s = queue_flows.spans.c
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(s.pid, s.began, s.ended))).all()
    assert len(rows) == 12
    assert len({r.pid for r in rows}) == 2  # both processes took runs ...
    assert queue_flows.max_overlap([(r.began, r.ended) for r in rows]) <= 3  # ... within 3


async def test_the_claim_waits_its_turn_on_the_queue_row(database_url: str) -> None:
    """Many claimers at once never exceed the limit (each holds the queue's row in turn)."""
    gate = queue_flows.FLEET
    async with Store(database_url) as store:
        for _ in range(6):
            await submit(store, queue_flows.busy_run, 0.0)
        stores = [Store(database_url) for _ in range(3)]
        try:
            from convergent.workflows import Worker

            workers = [Worker(st, queues={"tests-fleet": 10}) for st in stores]
            claimed = await asyncio.gather(*(w._claim("tests-fleet", 10) for w in workers))
            assert sum(len(c) for c in claimed) == gate.concurrency
        finally:
            for st in stores:
                await st.close()
