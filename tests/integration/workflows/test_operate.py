"""Operating runs: resume a failed run from its checkpoints (or from a chosen step), retry a
step now instead of after its backoff, and every action in the run's history."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.errors import (
    PermanentError,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunNotResumable,
    TransientError,
)
from convergent.ids import uuid7
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import dead_letters, run_steps
from convergent.workflows import (
    Saga,
    StepContext,
    WorkflowContext,
    cancel,
    history,
    result,
    resume,
    retry_step,
    run_steps_of,
    send,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running, until

calls: Counter[str] = Counter()
broken: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken.clear()


@step
async def work(ctx: StepContext, name: str) -> str:
    calls[name] += 1
    if name in broken:
        raise PermanentError(f"{name} is broken")
    return name


@step
async def undo(ctx: StepContext, name: str) -> None:
    calls[f"undo {name}"] += 1


@workflow(name="tests.operate.three")
async def three(ctx: WorkflowContext) -> list[str | None]:
    first = await work("a")
    got = await ctx.wait_for("go")
    return [first, got, await work("b"), await work("c")]


@workflow(name="tests.operate.saga")
async def with_saga(ctx: WorkflowContext) -> str:
    async with Saga() as saga:
        await saga.step(work, "a", compensate=undo)
        return await saga.step(work, "b")


@step(retry=RetryPolicy(max_attempts=5, initial_delay=3600, jitter=False))
async def slow_retry(ctx: StepContext) -> int:
    calls["slow"] += 1
    if ctx.attempt == 1:
        raise TransientError("503")
    return ctx.attempt


@workflow(name="tests.operate.backoff")
async def backoff(ctx: WorkflowContext) -> int:
    return await slow_retry()


async def _failed(store: Store, run_id: uuid.UUID) -> None:
    with pytest.raises(RunFailed):
        await result(store, run_id, wait=10)


async def test_a_failed_run_resumes_from_its_last_checkpoint(mstore: Store) -> None:
    broken.add("b")
    run_id = await submit(mstore, three)
    async with running(mstore):
        async with mstore.begin() as conn:
            await send(conn, run_id, "go", "event")
        await _failed(mstore, run_id)
        assert calls == {"a": 1, "b": 1}
        broken.clear()  # the fix is deployed
        async with mstore.begin() as conn:
            assert await resume(conn, run_id, actor="alice") == 3  # the failed step
        assert await result(mstore, run_id, wait=10) == ["a", "event", "b", "c"]
    assert calls == {"a": 1, "b": 2, "c": 1}  # a answered from its checkpoint
    (entry,) = await history(mstore, run_id)
    assert (entry.actor, entry.action, entry.outcome) == ("alice", "run.resume", "ok")
    assert "position 3" in (entry.detail or "")


async def test_a_run_resumes_from_a_chosen_step_and_takes_its_events_again(
    mstore: Store,
) -> None:
    broken.add("c")
    run_id = await submit(mstore, three)
    async with running(mstore):
        async with mstore.begin() as conn:
            await send(conn, run_id, "go", "event")
        await _failed(mstore, run_id)
        broken.clear()
        async with mstore.begin() as conn:
            await resume(conn, run_id, from_step=2)
        assert await result(mstore, run_id, wait=10) == ["a", "event", "b", "c"]
    assert calls == {"a": 1, "b": 2, "c": 2}
    assert await history(mstore, run_id) == []  # no actor: nothing recorded


async def test_resume_refuses_what_it_cannot_do_and_keeps_the_run(mstore: Store) -> None:
    async with mstore.begin() as conn:
        with pytest.raises(RunNotFound, match="runs list"):
            await resume(conn, uuid.uuid4())
    run_id = await submit(mstore, three)
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="still pending"):
            await resume(conn, run_id)
    async with running(mstore):
        async with mstore.begin() as conn:
            await send(conn, run_id, "go")
        await result(mstore, run_id, wait=10)
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="completed"):
            await resume(conn, run_id)
    assert (await status(mstore, run_id)).status == "completed"


async def test_a_compensated_run_is_not_resumed(mstore: Store) -> None:
    broken.add("b")
    run_id = await submit(mstore, with_saga)
    async with running(mstore):
        await _failed(mstore, run_id)
    assert calls["undo a"] == 1
    kinds = [s.kind for s in await run_steps_of(mstore, run_id)]
    assert kinds == ["step", "step", "compensate", "step"]
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="compensated"):
            await resume(conn, run_id, from_step=1)
    assert (await status(mstore, run_id)).status == "failed"


async def test_a_cancelled_run_is_not_resumed(mstore: Store) -> None:
    run_id = await submit(mstore, three)
    async with mstore.begin() as conn:
        await cancel(conn, run_id, actor="bob")
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="cancelled"):
            await resume(conn, run_id)
    assert [e.action for e in await history(mstore, run_id)] == ["run.cancel"]


async def test_retry_step_skips_the_backoff(mstore: Store, clock: ManualClock) -> None:
    run_id = await submit(mstore, backoff)
    async with running(mstore):

        async def retrying() -> bool:
            steps = await run_steps_of(mstore, run_id)
            return bool(steps) and steps[0].status == "retrying"

        await until(retrying)
        async with mstore.begin() as conn:
            assert await retry_step(conn, run_id, actor="carol") == 1
        assert await result(mstore, run_id, wait=10) == 2  # the clock never moved
    assert [e.action for e in await history(mstore, run_id)] == ["run.retry_step"]
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="completed"):
            await retry_step(conn, run_id)


async def test_retry_step_of_a_run_without_a_backoff_says_so(mstore: Store) -> None:
    run_id = await submit(mstore, three)
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="no step waiting"):
            await retry_step(conn, run_id)


@workflow(name="tests.operate.cancelled_by_error")
async def cancelled_by_error(ctx: WorkflowContext) -> str:
    first = await work("a")
    if "child" in broken:  # as when a child run it awaits was cancelled
        raise RunCancelled("child run was cancelled")
    return first + await work("b")


async def test_a_run_cancelled_by_an_error_resumes(mstore: Store) -> None:
    broken.add("child")
    run_id = await submit(mstore, cancelled_by_error)
    async with running(mstore):
        with pytest.raises(RunFailed, match="child run was cancelled"):
            await result(mstore, run_id, wait=10)
        assert (await status(mstore, run_id)).status == "cancelled"
        broken.clear()
        async with mstore.begin() as conn:
            assert await resume(conn, run_id) == 2
        assert await result(mstore, run_id, wait=10) == "ab"
    assert calls == {"a": 1, "b": 1}


async def test_a_run_given_up_on_while_compensating_resumes_to_finish_undoing(
    mstore: Store,
) -> None:
    broken.add("b")
    run_id = await submit(mstore, with_saga)
    async with running(mstore):
        await _failed(mstore, run_id)
    steps = await run_steps_of(mstore, run_id)
    assert [s.kind for s in steps] == ["step", "step", "compensate", "step"]
    async with mstore.begin() as conn:  # as if its workers kept dying before the undo landed
        await conn.execute(
            sa.delete(run_steps).where(run_steps.c.run_id == run_id, run_steps.c.seq == 4)
        )
        await conn.execute(
            dead_letters.insert().values(
                id=uuid7(),
                source="workflow",
                source_ref=str(run_id),
                name=with_saga.name,
                key=str(run_id),
                reason="the run's worker died 10 times; giving up",
                attempts=10,
                created_at=mstore.clock.now(),
            )
        )
    async with mstore.begin() as conn:
        with pytest.raises(RunNotResumable, match="compensated"):
            await resume(conn, run_id, from_step=1)  # never forward over undone work
    async with mstore.begin() as conn:
        assert await resume(conn, run_id, actor="ops") == 4
    async with running(mstore):
        with pytest.raises(RunFailed, match="b is broken"):  # it ends as it would have, undone
            await result(mstore, run_id, wait=10)
    assert calls == {"a": 1, "b": 1, "undo a": 2}
    assert [s.kind for s in await run_steps_of(mstore, run_id)][-1] == "step"
