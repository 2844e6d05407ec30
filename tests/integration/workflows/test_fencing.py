"""Fencing: a worker that lost its lease writes nothing more for the run.

A worker partitioned from the database past its lease keeps executing in memory. Once another
worker holds the run, the first one's checkpoint, status change or final state must not land:
every write of a run is conditional on the writer still holding its lease.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import sqlalchemy as sa

from convergent.store import Store
from convergent.store.schema import run_steps, runs
from convergent.workflows import StepContext, WorkflowContext, result, step, submit, workflow
from tests.integration.workflows.conftest import running, until

gates: dict[str, asyncio.Event] = {}  # made in each test, on its own event loop


@step
async def slow_charge(ctx: StepContext, amount: int) -> str:
    gates["entered"].set()
    await gates["release"].wait()  # the worker is cut off here; meanwhile another one takes the run
    return f"charged {amount}"


@step
async def ship(ctx: StepContext) -> str:
    return "shipped"


@workflow(name="tests.fencing.order")
async def order(ctx: WorkflowContext, amount: int) -> str:
    await slow_charge(amount)
    return await ship()


async def _take_over(store: Store, run_id: uuid.UUID) -> None:
    """What a sweeper and a second worker do once the first one's lease ran out."""
    async with store.begin() as conn:
        await conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(lease_owner="worker-b", lease_until=store.clock.now() + timedelta(hours=1))
        )


async def test_a_worker_that_lost_its_lease_writes_no_checkpoint_and_no_final_state(
    store: Store,
) -> None:
    gates.update(entered=asyncio.Event(), release=asyncio.Event())
    await store.migrate()
    # a long lease: the first worker does not notice the takeover by renewing during the test
    async with running(store, lease_seconds=3600) as worker_a:
        run_id = await submit(store, order, 5, key="fenced")
        await asyncio.wait_for(gates["entered"].wait(), 10)
        await _take_over(store, run_id)
        gates["release"].set()  # the cut-off worker finishes its step and tries to record it

        async def run_ended_in_a() -> bool:  # its writes were all tried by then
            return run_id not in worker_a._tasks

        await until(run_ended_in_a)

    async with store.read() as conn:
        steps = (await conn.execute(sa.select(run_steps).where(run_steps.c.run_id == run_id))).all()
        run = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).one()
    assert [(s.seq, s.status) for s in steps if s.status == "completed"] == []
    assert run.status != "completed"
    assert run.lease_owner == "worker-b"


ledger = sa.Table(
    "fencing_ledger", sa.MetaData(), sa.Column("entry", sa.String(64), primary_key=True)
)


@step
async def book(ctx: StepContext, entry: str) -> str:
    gates["entered"].set()
    await gates["release"].wait()  # cut off here; another worker takes the run
    async with ctx.transaction() as conn:  # the step's own write, fenced by the lease
        await conn.execute(ledger.insert().values(entry=entry))
    return entry


@workflow(name="tests.fencing.book")
async def booking(ctx: WorkflowContext, entry: str) -> str:
    return await book(entry)


async def test_a_steps_own_transaction_commits_nothing_after_a_takeover(store: Store) -> None:
    gates.update(entered=asyncio.Event(), release=asyncio.Event())
    await store.migrate()
    async with store.begin() as conn:
        await conn.run_sync(ledger.metadata.create_all)
    async with running(store, lease_seconds=3600) as worker_a:
        run_id = await submit(store, booking, "e-1", key="fenced-book")
        await asyncio.wait_for(gates["entered"].wait(), 10)
        await _take_over(store, run_id)
        gates["release"].set()

        async def run_ended_in_a() -> bool:
            return run_id not in worker_a._tasks

        await until(run_ended_in_a)
    async with store.read() as conn:
        assert (await conn.execute(sa.select(ledger))).all() == []
        run = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).one()
    assert run.lease_owner == "worker-b"
    assert run.status == "running"


async def test_the_step_transaction_commits_while_the_lease_is_held(store: Store) -> None:
    gates.update(entered=asyncio.Event(), release=asyncio.Event())
    gates["release"].set()
    await store.migrate()
    async with store.begin() as conn:
        await conn.run_sync(ledger.metadata.create_all)
    async with running(store):
        run_id = await submit(store, booking, "e-2", key="held-book")
        assert await result(store, run_id, wait=10) == "e-2"
    async with store.read() as conn:
        assert (await conn.execute(sa.select(ledger.c.entry))).scalars().all() == ["e-2"]
