"""Deploying changed workflow code under runs in flight: runs start on deploy 1, its worker
stops, a worker with deploy 2 takes over, and every run completes the way its version says.
A run whose version no worker serves waits, marked and counted, and never fails.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import REGISTRY

from convergent.clock import ManualClock
from convergent.store import Store
from convergent.workflows import (
    StepContext,
    Workflow,
    WorkflowContext,
    result,
    resume,
    send,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows import flows
from tests.integration.workflows.conftest import running, until
from tests.integration.workflows.processes import spawn
from tests.integration.workflows.provider import Provider
from tests.integration.workflows.test_crash import stop_worker


async def effects(store: Store, run_id: uuid.UUID) -> list[str]:
    e = flows.effects.c
    async with store.read() as conn:
        rows = await conn.execute(sa.select(e.step).where(e.run_id == str(run_id)).order_by(e.id))
        return [r.step for r in rows]


async def test_a_deploy_never_breaks_a_run_in_flight(
    effects_db: str, provider: Provider, tmp_path: Path
) -> None:
    from tests.integration.workflows import versioned_v1 as v1

    log = tmp_path / "workers.log"
    async with Store(effects_db) as store:
        old_orders = [await submit(store, v1.order, f"o{i}") for i in range(3)]
        old_ships = [await submit(store, v1.shipping, f"s{i}") for i in range(3)]
        deploy1 = spawn(effects_db, provider, log, "versioned_v1")
        try:
            for run_id in old_orders + old_ships:  # each waits for "go" (a checkpoint)
                await until(lambda r=run_id: _has_wait(store, r), timeout=30)
        finally:
            stop_worker(deploy1)

        from tests.integration.workflows import versioned_v2 as v2

        assert v2.shipping.version == "2"
        new_orders = [await submit(store, v2.order, f"n{i}") for i in range(2)]
        new_ships = [await submit(store, v2.shipping, f"m{i}") for i in range(2)]
        deploy2 = spawn(effects_db, provider, log, "versioned_v2")
        try:
            for run_id in old_orders + old_ships + new_orders + new_ships:
                async with store.begin() as conn:
                    await send(conn, run_id, "go")
            for run_id in old_orders:  # passed the change point before it existed: old path
                assert await result(store, run_id, wait=30) == ["reserve", "ship"]
            for run_id in new_orders:
                assert await result(store, run_id, wait=30) == ["reserve", "fraud", "ship"]
            for run_id in new_ships:
                assert await result(store, run_id, wait=30) == "v2:pack"
            for run_id in old_ships:  # no worker serves version 1 now: they wait, visibly

                async def marked(r: uuid.UUID = run_id) -> bool:
                    return (await status(store, r)).waiting_for is not None

                await until(marked, timeout=30)
                info = await status(store, run_id)
                assert info.status == "running"
                assert info.version == "1"
                assert "version '1'" in (info.waiting_for or "")
        finally:
            stop_worker(deploy2)

        both = spawn(effects_db, provider, log, "versioned_v2", "versioned_shipping_v1")
        try:
            for run_id in old_ships:
                assert await result(store, run_id, wait=30) == "v1:label"
                assert (await status(store, run_id)).waiting_for is None
        finally:
            stop_worker(both)
        for run_id in old_orders:
            assert await effects(store, run_id) == ["reserve", "ship"]
        for run_id in new_orders:
            assert await effects(store, run_id) == ["reserve", "fraud", "ship"]
        for run_id in old_ships:
            assert await effects(store, run_id) == ["label"]


async def _has_wait(store: Store, run_id: uuid.UUID) -> bool:
    from convergent.workflows import run_steps_of

    return any(s.kind == "wait" for s in await run_steps_of(store, run_id))


@workflow(name="tests.versions.known")
async def known(ctx: WorkflowContext) -> str:
    return "served"


async def test_a_run_of_a_version_nobody_serves_waits_and_is_counted(
    mstore: Store, clock: ManualClock
) -> None:
    retired: Workflow[[], str] = Workflow(known.fn, known.name, known.queue, version="0")
    old = await submit(mstore, retired)
    new = await submit(mstore, known)
    async with running(mstore, lease_seconds=5, sweep_interval=0.05) as worker:
        assert await result(mstore, new, wait=10) == "served"
        clock.advance(6)
        assert await worker.mark_unserved() >= 0  # the sweeper marks it (or has already)

        async def marked() -> bool:
            return (await status(mstore, old)).waiting_for is not None

        await until(marked)
    info = await status(mstore, old)
    assert info.status == "pending"
    assert info.version == "0"
    labels = {"workflow": known.name, "version": "0"}
    assert REGISTRY.get_sample_value("convergent_workflow_runs_waiting_for_version", labels) == 1


@step
async def greet(ctx: StepContext, name: str) -> str:
    return f"hello {name}"


@step
async def shout(ctx: StepContext, name: str) -> str:
    return f"HELLO {name}"


async def test_code_that_no_longer_matches_a_run_parks_it_instead_of_failing_it(
    mstore: Store, clock: ManualClock
) -> None:
    @workflow(name="tests.versions.changed")
    async def before(ctx: WorkflowContext, name: str) -> str:
        await ctx.wait_for("go")
        return await greet(name)

    run_id = await submit(mstore, before, "ann")
    async with running(mstore, lease_seconds=5):
        await until(lambda: _has_wait(mstore, run_id))

    @workflow(name="tests.versions.changed")  # deployed without a guard: a step moved first
    async def after(ctx: WorkflowContext, name: str) -> str:
        await shout(name)
        await ctx.wait_for("go")
        return await greet(name)

    async with mstore.begin() as conn:
        await send(conn, run_id, "go")
    async with running(mstore, lease_seconds=5):

        async def parked() -> bool:
            return "matching its history" in ((await status(mstore, run_id)).waiting_for or "")

        await until(parked)
        assert (await status(mstore, run_id)).status == "running"  # not failed, not undone
        async with mstore.begin() as conn:  # let the new code take over from position 1
            assert await resume(conn, run_id, from_step=1, actor="ops") == 1
        assert await result(mstore, run_id, wait=10) == "hello ann"
