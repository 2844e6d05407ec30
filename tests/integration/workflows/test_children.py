"""Child runs on SQLite and PostgreSQL: a parent awaits its children durably, a child's failure
reaches the parent, cancelling the parent cancels the child it waits for, an unknown child
workflow fails the parent with the fix; a SIGKILLed worker is replaced and each child's effect
happens once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.errors import RunCancelled, RunFailed
from convergent.store import Store
from convergent.store.schema import run_children, runs
from convergent.workflows import (
    cancel,
    list_runs,
    result,
    resume,
    run_steps_of,
    send,
    status,
    submit,
)
from convergent.workflows.children import ChildWaker, wake_parents
from tests.integration.workflows import children_flows, sched_flows
from tests.integration.workflows.conftest import running, until

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def kids_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Store]:
    monkeypatch.setenv("WF_TEST_DATABASE_URL", database_url)
    async with Store(database_url) as store:
        async with store.begin() as conn:
            await conn.run_sync(sched_flows.sched_metadata.create_all)
        yield store
    for cached in sched_flows._stores.values():
        await cached.close()
    sched_flows._stores.clear()


async def notes(store: Store) -> list[str]:
    t = sched_flows.ticks_seen.c
    async with store.read() as conn:
        return [r.label for r in await conn.execute(sa.select(t.label).order_by(t.label))]


async def count_runs(store: Store) -> int:
    async with store.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(runs)) or 0)


class Fleet:
    """A worker and the child waker running in this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stop = asyncio.Event()
        self.waker = ChildWaker(store, poll_interval=0.05)

    async def __aenter__(self) -> Fleet:
        self.task = asyncio.create_task(self.waker.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


async def test_a_parent_awaits_its_children_and_each_runs_once(kids_db: Store) -> None:
    store = kids_db
    async with Fleet(store), running(store):
        run_id = await submit(store, children_flows.parent, 1)
        assert await result(store, run_id, wait=20) == 6
    assert await notes(store) == ["kid-1", "kid-2"]
    assert await count_runs(store) == 3
    steps = await run_steps_of(store, run_id)
    assert [(s.kind, s.name, s.status) for s in steps] == [
        ("child", "tests.children.kid", "completed"),
        ("child", "tests.children.kid", "completed"),
    ]
    async with store.read() as conn:
        links = (await conn.execute(sa.select(run_children.c.status))).all()
    assert [r.status for r in links] == ["done", "done"]


async def test_a_childs_failure_reaches_the_parent_as_child_failed(kids_db: Store) -> None:
    store = kids_db
    async with Fleet(store), running(store):
        run_id = await submit(store, children_flows.catches)
        value = await result(store, run_id, wait=20)
    assert value.startswith("caught: child tests.children.failing_kid failed")
    assert "the kid cannot" in value


async def test_cancelling_the_parent_cancels_the_child_it_waits_for(kids_db: Store) -> None:
    store = kids_db
    async with Fleet(store), running(store):
        run_id = await submit(store, children_flows.patient)

        async def child_waits() -> bool:
            kids = await list_runs(store, workflow="tests.children.waiting_kid")
            return bool(kids) and kids[0].lease_owner is None and kids[0].status == "running"

        await until(child_waits)
        [kid] = await list_runs(store, workflow="tests.children.waiting_kid")
        async with store.begin() as conn:
            await cancel(conn, run_id)
        with pytest.raises(RunCancelled):
            await result(store, run_id, wait=20)
        with pytest.raises(RunCancelled):
            await result(store, kid.id, wait=20)
        async with store.begin() as conn:  # a late event changes nothing
            await send(conn, kid.id, "go", "late")
    assert (await status(store, kid.id)).status == "cancelled"


async def test_a_child_of_an_unknown_workflow_fails_the_parent_with_the_fix(
    kids_db: Store,
) -> None:
    store = kids_db
    async with Fleet(store), running(store):
        run_id = await submit(store, children_flows.asks_unknown)
        with pytest.raises(RunFailed, match="convergent worker --import"):
            await result(store, run_id, wait=20)
    assert await count_runs(store) == 1  # nothing was started


def spawn(database_url: str, log: Path, faults: str = "") -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WF_TEST_DATABASE_URL": database_url,
        "CONVERGENT_FAULTS": faults,
    }
    command = [
        *(sys.executable, "-m", "convergent", "worker", "--database-url", database_url),
        *("--import", "tests.integration.workflows.children_flows", "--lease-seconds", "1"),
        *("--poll-interval", "0.1", "--no-relay", "--no-webhooks"),
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)


@pytest.mark.parametrize(
    "point",
    [
        "workflow.after_child_started",  # the parent's worker dies before its checkpoint
        "workflow.after_checkpoint",  # the first kid's step is saved; the kid has not ended
    ],
)
async def test_a_worker_killed_mid_child_is_replaced_and_each_effect_happens_once(
    kids_db: Store, database_url: str, point: str, tmp_path: Path
) -> None:
    store = kids_db
    run_id: uuid.UUID = await submit(store, children_flows.parent, 1)
    log = tmp_path / "worker.log"
    crashing = spawn(database_url, log, faults=point)
    assert crashing.wait(timeout=60) == -signal.SIGKILL, log.read_text()
    replacement = spawn(database_url, log)
    try:
        assert await result(store, run_id, wait=60) == 6
    finally:
        if replacement.poll() is None:
            replacement.send_signal(signal.SIGTERM)
        replacement.wait(timeout=20)
    assert await notes(store) == ["kid-1", "kid-2"]
    assert await count_runs(store) == 3


async def test_a_link_whose_parent_ended_otherwise_stops_being_watched(kids_db: Store) -> None:
    store = kids_db
    parent_id = await submit(store, children_flows.patient)
    async with store.begin() as conn:
        await conn.execute(
            sa.update(runs).where(runs.c.id == parent_id).values(status="failed", next_at=None)
        )
        await conn.execute(
            sa.insert(run_children).values(
                parent_id=parent_id,
                seq=1,
                child_id=uuid.uuid4(),
                status="waiting",
                created_at=store.clock.now(),
            )
        )
    assert await wake_parents(store) == (0, 0)
    async with store.read() as conn:
        assert await conn.scalar(sa.select(run_children.c.status)) == "orphaned"


async def test_a_detached_child_outlives_its_parent(kids_db: Store) -> None:
    store = kids_db
    async with Fleet(store), running(store):
        parent_id = await submit(store, children_flows.spawner)
        kid_id = uuid.UUID(await result(store, parent_id, wait=20))
        assert (await status(store, kid_id)).status in ("pending", "running")
        async with store.begin() as conn:
            await send(conn, kid_id, "go", "later")
        assert await result(store, kid_id, wait=20) == "later"
    steps = await run_steps_of(store, parent_id)
    assert [(s.kind, s.status) for s in steps] == [("detached", "completed")]


async def test_resuming_a_parent_whose_child_failed_runs_the_child_again(kids_db: Store) -> None:
    store = kids_db
    children_flows.FLAKY["fail"] = True
    try:
        async with Fleet(store), running(store):
            parent_id = await submit(store, children_flows.trusting, 7)
            with pytest.raises(RunFailed, match="the kid has a bug"):
                await result(store, parent_id, wait=20)
            children_flows.FLAKY["fail"] = False  # the fix is deployed
            async with store.begin() as conn:
                await resume(conn, parent_id)
            assert await result(store, parent_id, wait=20) == 107
    finally:
        children_flows.FLAKY["fail"] = True
    kids = await list_runs(store, workflow="tests.children.flaky_kid")
    assert sorted(k.status for k in kids) == ["completed", "failed"]
    assert await notes(store) == ["flaky-7"]
