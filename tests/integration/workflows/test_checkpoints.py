"""What a run records: its status as written, and a retried step's first attempt time in its own
column (not inside the step's result)."""

from __future__ import annotations

from datetime import timedelta

from convergent.clock import ManualClock
from convergent.errors import TransientError
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.workflows import (
    StepContext,
    WorkflowContext,
    result,
    run_steps_of,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running, until

seen: list[str] = []


@step(retry=RetryPolicy(max_attempts=3, initial_delay=30, jitter=False))
async def fails_once(ctx: StepContext) -> int:
    if ctx.attempt == 1:
        raise TransientError("503")
    return ctx.attempt


@workflow(name="tests.checkpoints.retried")
async def retried(ctx: WorkflowContext) -> int:
    return await fails_once()


@step
async def look(ctx: StepContext) -> str:
    return (await status(ctx.store, ctx.run_id)).status


@workflow(name="tests.checkpoints.status")
async def writes_status(ctx: WorkflowContext) -> str:
    await ctx._write_status("running")
    return await look()


async def test_write_status_writes_the_status_it_is_given(mstore: Store) -> None:
    run_id = await submit(mstore, writes_status)
    async with running(mstore):
        assert await result(mstore, run_id, wait=10) == "running"


async def test_a_retrying_step_keeps_its_first_attempt_in_a_column(
    mstore: Store, clock: ManualClock
) -> None:
    started = clock.now()
    run_id = await submit(mstore, retried)
    async with running(mstore):

        async def retrying() -> bool:
            steps = await run_steps_of(mstore, run_id)
            return bool(steps) and steps[0].status == "retrying"

        await until(retrying)
        (s,) = await run_steps_of(mstore, run_id)
        assert s.first_attempt_at == started
        assert s.result is None  # the result column holds results only
        clock.advance(31)
        assert await result(mstore, run_id, wait=10) == 2
    (s,) = await run_steps_of(mstore, run_id)
    assert s.status == "completed"
    assert s.result == 2
    assert s.next_attempt_at is None or s.next_attempt_at <= started + timedelta(seconds=31)
