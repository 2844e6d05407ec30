"""The worker fleet: leases, takeover, queue limits, graceful stop, poison runs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.errors import RunFailed
from convergent.store import Store
from convergent.store.schema import dead_letters, run_steps, runs
from convergent.workflows import (
    StepContext,
    WorkflowContext,
    result,
    start,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running, until

ran: list[str] = []
gate: dict[str, asyncio.Event] = {}
inside = {"now": 0, "max": 0}


@pytest.fixture(autouse=True)
def _reset() -> None:
    ran.clear()
    gate.clear()
    inside.update(now=0, max=0)


@step
async def work(ctx: StepContext, name: str) -> str:
    ran.append(name)
    return name


@workflow(name="tests.worker.pair")
async def pair(ctx: WorkflowContext) -> list[str]:
    return [await work("a"), await work("b")]


async def test_a_run_whose_worker_vanished_is_taken_over_when_its_lease_expires(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, pair)
    now = clock.now()
    async with mstore.begin() as conn:  # worker "dead" claimed it and checkpointed step a
        await conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(status="running", lease_owner="dead", lease_until=now + timedelta(seconds=30))
        )
        await conn.execute(
            sa.insert(run_steps).values(
                run_id=run_id,
                seq=1,
                kind="step",
                name="work",
                status="completed",
                idempotency_key=f"{run_id}:1:work",
                attempts=1,
                result="a",
                updated_at=now,
            )
        )
    async with running(mstore, lease_seconds=30, sweep_interval=0.05) as other:
        await asyncio.sleep(0.3)
        assert (await status(mstore, run_id)).lease_owner == "dead"  # the lease still holds
        clock.advance(31)
        assert await result(mstore, run_id, wait=10) == ["a", "b"]
        assert other.completed == 1
    assert ran == ["b"]
    assert (await status(mstore, run_id)).attempts == 1


async def test_a_run_that_keeps_killing_its_workers_is_dead_lettered(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, pair)
    async with mstore.begin() as conn:
        await conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(status="running", lease_owner="dead", lease_until=clock.now(), attempts=2)
        )
    clock.advance(1)
    async with running(mstore, sweep_interval=0.05, max_run_attempts=3):
        with pytest.raises(RunFailed, match="died 3 times"):
            await result(mstore, run_id, wait=10)
    async with mstore.read() as conn:
        row = (await conn.execute(sa.select(dead_letters))).one()
    assert (row.source, row.source_ref) == ("workflow", str(run_id))
    assert ran == []


@step
async def hold(ctx: StepContext, name: str) -> str:
    inside["now"] += 1
    inside["max"] = max(inside["max"], inside["now"])
    try:
        await gate.setdefault(name, asyncio.Event()).wait()
    finally:
        inside["now"] -= 1
    return name


@workflow(name="tests.worker.held", queue="slow")
async def held(ctx: WorkflowContext, name: str) -> str:
    return await hold(name)


async def test_a_queue_limit_caps_the_runs_held_at_once(mstore: Store) -> None:
    ids = [await submit(mstore, held, str(i)) for i in range(3)]
    async with running(mstore, queues={"slow": 1}, concurrency=10):
        for i, run_id in enumerate(ids):
            await until(lambda i=i: _true(str(i) in gate))
            gate[str(i)].set()
            assert await result(mstore, run_id, wait=10) == str(i)
    assert inside["max"] == 1


async def test_stopping_a_worker_releases_its_leases_for_others(mstore: Store) -> None:
    run_id = await submit(mstore, held, "x")
    async with running(mstore, queues=["slow"]):
        await until(lambda: _true("x" in gate))
    info = await status(mstore, run_id)
    assert (info.lease_owner, info.status) == (None, "running")
    async with running(mstore, queues=["slow"]):  # another worker picks it up at once
        await until(lambda: _true(inside["now"] == 1))
        gate["x"].set()
        assert await result(mstore, run_id, wait=10) == "x"


async def _true(value: bool) -> bool:
    return value


async def test_two_workers_when_the_holders_lease_expires_the_other_takes_over(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, held, "y")
    async with running(mstore, queues=["slow"], lease_seconds=30) as first:
        await until(lambda: _true(inside["now"] == 1))  # the first worker is stuck in the step
        assert (await status(mstore, run_id)).lease_owner == first.id
        clock.advance(31)  # it never renewed: as if its machine froze
        async with running(mstore, queues=["slow"], sweep_interval=0.05) as second:
            await until(lambda: _true(inside["now"] == 2))  # the second replays and runs it
            assert (await status(mstore, run_id)).lease_owner == second.id
            gate["y"].set()
            assert await result(mstore, run_id, wait=10) == "y"
        assert (await status(mstore, run_id)).attempts == 1


async def test_a_failed_claim_is_retried_and_the_runs_held_go_on(
    mstore: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database went away under the claim loop (a restart): claims retry, nothing stops."""
    from convergent.workflows import Worker

    worker = Worker(mstore, poll_interval=0.05)
    real_claim = worker.claim_due_runs
    failures = {"left": 2}

    async def flaky_claim() -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("the database restarted")
        return await real_claim()

    monkeypatch.setattr(worker, "claim_due_runs", flaky_claim)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: _true(failures["left"] == 0))
        async with mstore.begin() as conn:  # in a caller's transaction: it must be claimed
            run_id = await start(conn, pair)
        assert await result(mstore, run_id, wait=10) == ["a", "b"]
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_worker_loop_restarted_after_a_crash_still_commits_its_checkpoints(
    mstore: Store,
) -> None:
    """`run_loops` restarts a crashed loop on the same Worker: its committer must work again."""
    from convergent.workflows import Worker

    worker = Worker(mstore, poll_interval=0.05)
    for _ in range(2):  # the second run of the loop is the restart
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            run_id = await submit(mstore, pair)
            assert await result(mstore, run_id, wait=10) == ["a", "b"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
    assert worker._free_slots() == worker.concurrency


async def test_a_worker_keeps_running_work_after_its_connections_are_killed(
    pg_url: str,
) -> None:
    """Every server connection dies (as in a PostgreSQL restart); due runs are still claimed."""
    async with Store(pg_url) as store, running(store, poll_interval=0.2) as worker:
        before = await submit(store, pair)
        assert await result(store, before, wait=10) == ["a", "b"]
        async with Store(pg_url) as admin, admin.begin() as conn:
            killed = await conn.scalar(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert killed
        after = [await _start_retrying(store) for _ in range(5)]
        for run_id in after:
            assert await result(store, run_id, wait=20) == ["a", "b"]
        assert worker.completed >= 6


async def _start_retrying(store: Store) -> uuid.UUID:
    """A client retries a start that met a dead pooled connection (same key, same run)."""
    key = f"after-kill-{len(ran)}-{asyncio.get_running_loop().time()}"
    for _ in range(5):
        try:
            return await submit(store, pair, key=key)
        except Exception:
            await asyncio.sleep(0.1)
    return await submit(store, pair, key=key)


@step
async def undo(ctx: StepContext, name: str) -> None:
    ran.append(f"undo {name}")


@workflow(name="tests.worker.saga_pair")
async def saga_pair(ctx: WorkflowContext) -> list[str]:
    from convergent.workflows import Saga

    async with Saga() as saga:
        first = await saga.step(work, "a", compensate=undo)
        second = await saga.step(work, "b", compensate=undo)
    return [first, second]


@pytest.mark.parametrize("lost", ["checkpoint", "final write"])
async def test_a_database_outage_mid_run_pauses_the_saga_instead_of_failing_it(
    mstore: Store, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    """A checkpoint that cannot commit (the database restarted) is no business failure: no
    compensation runs, no attempt is counted, and the run resumes from its checkpoints."""
    from convergent.errors import StoreUnavailable
    from convergent.workflows import Worker

    worker = Worker(mstore, poll_interval=0.05)
    enqueue = worker.committer.enqueue
    failing = {"left": 1}

    def flaky_enqueue(statement: object, params: dict[str, object], *more: object) -> object:
        if lost == "final write":
            wanted = params.get("b_status") == "completed"
        else:  # the checkpoint of the first step
            wanted = params.get("name") == "work" and params.get("status") == "completed"
        if wanted and failing["left"]:
            failing["left"] -= 1
            future = asyncio.get_running_loop().create_future()
            future.set_exception(StoreUnavailable("cannot reach the database: restarting"))
            return future
        return enqueue(statement, params, *more)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.committer, "enqueue", flaky_enqueue)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with mstore.begin() as conn:
            run_id = await start(conn, saga_pair)
        assert await result(mstore, run_id, wait=10) == ["a", "b"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert failing["left"] == 0
    assert not [name for name in ran if name.startswith("undo")]
    info = await status(mstore, run_id)
    assert (info.status, info.attempts) == ("completed", 0)
