"""Sagas, durable events and cancellation, in one process on a manual clock."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from convergent.clock import ManualClock
from convergent.errors import PermanentError, RunCancelled, RunFailed
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import dead_letters
from convergent.workflows import (
    Saga,
    StepContext,
    WorkflowContext,
    cancel,
    result,
    send,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running, until

log: list[str] = []
broken_undo = {"on": False}


async def send_to(
    store: Store, run_id: uuid.UUID, event: str, payload: Any, dedupe_key: str
) -> bool:
    async with store.begin() as conn:
        return await send(conn, run_id, event, payload, dedupe_key=dedupe_key)


async def cancel_in(store: Store, run_id: uuid.UUID) -> None:
    async with store.begin() as conn:
        await cancel(conn, run_id)


@pytest.fixture(autouse=True)
def _reset() -> None:
    log.clear()
    broken_undo["on"] = False


@step
async def do(ctx: StepContext, name: str) -> str:
    if name == "fail":
        raise PermanentError("step 3 refused")
    log.append(f"do {name}")
    return name


@step(retry=RetryPolicy(max_attempts=2, initial_delay=0))
async def undo(ctx: StepContext, name: str) -> None:
    if broken_undo["on"] and name == "2":
        raise RuntimeError("the refund API is down")
    log.append(f"undo {name}")


@workflow(name="tests.saga.three")
async def three(ctx: WorkflowContext, third: str) -> str:
    async with Saga() as saga:
        await saga.step(do, "1", compensate=undo)
        await saga.step(do, "2", compensate=undo)
        return await saga.step(do, third, compensate=undo)


async def test_a_failing_third_step_compensates_two_then_one(mstore: Store) -> None:
    run_id = await submit(mstore, three, "fail")
    async with running(mstore):
        with pytest.raises(RunFailed, match="step 3 refused"):
            await result(mstore, run_id, wait=10)
    assert log == ["do 1", "do 2", "undo 2", "undo 1"]
    assert (await status(mstore, run_id)).status == "failed"


async def test_a_saga_that_succeeds_compensates_nothing(mstore: Store) -> None:
    run_id = await submit(mstore, three, "3")
    async with running(mstore):
        assert await result(mstore, run_id, wait=10) == "3"
    assert log == ["do 1", "do 2", "do 3"]


async def test_a_compensation_that_keeps_failing_is_dead_lettered_and_the_rest_still_run(
    mstore: Store,
) -> None:
    broken_undo["on"] = True
    alerts_before = _dead_letter_alerts()
    run_id = await submit(mstore, three, "fail")
    async with running(mstore):
        with pytest.raises(RunFailed):
            await result(mstore, run_id, wait=10)
    assert log == ["do 1", "do 2", "undo 1"]
    async with mstore.read() as conn:
        rows = (await conn.execute(sa.select(dead_letters))).all()
    assert [(r.source, r.name, r.attempts) for r in rows] == [("workflow", "undo", 2)]
    assert "refund API is down" in rows[0].reason
    assert _dead_letter_alerts() == alerts_before + 1


def _dead_letter_alerts() -> float:
    labels = {"workflow": "tests.saga.three", "step": "undo"}
    value = REGISTRY.get_sample_value("convergent_workflow_dead_letters_total", labels)
    return value or 0.0


@step
async def note(ctx: StepContext, text: str) -> str:
    log.append(text)
    return text


@workflow(name="tests.events.fills")
async def collect_fills(ctx: WorkflowContext, wanted: int) -> list[int]:
    fills: list[int] = []
    while sum(fills) < wanted:
        fill = await ctx.wait_for("fill", timeout=3600)
        if fill is None:
            break
        fills.append(fill["qty"])
    return fills


async def test_events_wake_a_waiting_run_and_a_duplicate_fill_is_dropped(mstore: Store) -> None:
    run_id = await submit(mstore, collect_fills, 10)
    async with running(mstore):
        assert await send_to(mstore, run_id, "fill", {"qty": 4}, dedupe_key="fill-1")  # by push
        assert not await send_to(mstore, run_id, "fill", {"qty": 4}, dedupe_key="fill-1")  # poll
        assert await send_to(mstore, run_id, "fill", {"qty": 6}, dedupe_key="fill-2")
        assert await result(mstore, run_id, wait=10) == [4, 6]


async def test_waiting_for_an_event_times_out_on_the_clock(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, collect_fills, 10)
    async with running(mstore):
        await send_to(mstore, run_id, "fill", {"qty": 1}, dedupe_key="a")
        await until(lambda: _is_waiting(mstore, run_id))
        clock.advance(3601)
        assert await result(mstore, run_id, wait=10) == [1]


@workflow(name="tests.cancel.slow")
async def slow_saga(ctx: WorkflowContext) -> str:
    async with Saga() as saga:
        await saga.step(do, "1", compensate=undo)
        await ctx.sleep(3600)
        return await saga.step(do, "2", compensate=undo)


async def test_cancelling_a_running_saga_compensates_and_ends_cancelled(mstore: Store) -> None:
    run_id = await submit(mstore, slow_saga)
    async with running(mstore):
        await until(lambda: _is_waiting(mstore, run_id))
        await cancel_in(mstore, run_id)
        with pytest.raises(RunCancelled):
            await result(mstore, run_id, wait=10)
    assert log == ["do 1", "undo 1"]
    assert (await status(mstore, run_id)).status == "cancelled"


async def test_cancelling_a_run_that_never_started_ends_it_at_once(mstore: Store) -> None:
    run_id = await submit(mstore, slow_saga)
    await cancel_in(mstore, run_id)
    assert (await status(mstore, run_id)).status == "cancelled"
    async with running(mstore):
        with pytest.raises(RunCancelled):
            await result(mstore, run_id, wait=1)
    assert log == []


async def _is_waiting(store: Store, run_id: uuid.UUID) -> bool:
    info = await status(store, run_id)
    return info.lease_owner is None and info.status == "running"
