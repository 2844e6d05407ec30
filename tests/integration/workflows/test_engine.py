"""Runs, replay, determinism, keys, retries and reconcile, in one process on a manual clock."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.errors import RunFailed, TransientError
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import run_steps, runs
from convergent.workflows import (
    StepContext,
    WorkflowContext,
    result,
    run_steps_of,
    send,
    start,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running, until

calls: Counter[str] = Counter()
keys: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    keys.clear()


@step
async def double(ctx: StepContext, x: int) -> int:
    calls["double"] += 1
    keys.append(ctx.idempotency_key)
    return x * 2


@workflow(name="tests.engine.twice")
async def twice(ctx: WorkflowContext, x: int) -> int:
    y = await double(x)
    await ctx.sleep(60)
    return await double(y)


async def test_a_run_returns_the_workflows_result(mstore: Store, clock: ManualClock) -> None:
    run_id = await submit(mstore, twice, 3)
    async with running(mstore):
        await until(lambda: _has_step(mstore, run_id, 2))
        clock.advance(61)
        assert await result(mstore, run_id, wait=10) == 12


async def test_the_same_key_gives_the_same_run(mstore: Store) -> None:
    first = await submit(mstore, twice, 1, key="order-1")
    again = await submit(mstore, twice, 99, key="order-1")
    assert first == again
    assert (await status(mstore, first)).status == "pending"


async def test_a_completed_step_is_not_run_again_after_a_restart(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, twice, 3)
    async with running(mstore):  # runs step 1, then sleeps durably
        await until(lambda: _has_step(mstore, run_id, 2))
    clock.advance(61)
    async with running(mstore):  # a new worker replays: step 1 answers from its checkpoint
        assert await result(mstore, run_id, wait=10) == 12
    assert calls["double"] == 2


async def test_the_sleep_survives_a_restart_and_waits_for_the_clock(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, twice, 3)
    async with running(mstore):
        await until(lambda: _has_step(mstore, run_id, 2))
    async with running(mstore):
        clock.advance(30)
        await asyncio.sleep(0.3)
        assert (await status(mstore, run_id)).status == "running"
        clock.advance(31)
        assert await result(mstore, run_id, wait=10) == 12


async def test_idempotency_keys_are_stable_per_run_and_position(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await submit(mstore, twice, 3)
    async with running(mstore):
        await until(lambda: _has_step(mstore, run_id, 2))
        clock.advance(61)
        await result(mstore, run_id, wait=10)
    assert keys == [f"{run_id}:1:double", f"{run_id}:3:double"]
    recorded = [s.idempotency_key for s in await run_steps_of(mstore, run_id) if s.kind == "step"]
    assert recorded == keys


@workflow(name="tests.engine.changed")
async def changed(ctx: WorkflowContext, x: int) -> int:
    return await double(x)


async def test_a_replay_that_asks_for_other_steps_waits_for_matching_code(
    mstore: Store,
) -> None:
    run_id = await submit(mstore, changed, 1)
    async with mstore.begin() as conn:  # as if an older version recorded another step first
        await conn.execute(
            sa.insert(run_steps).values(
                run_id=run_id,
                seq=1,
                kind="step",
                name="something_else",
                status="completed",
                idempotency_key="k",
                attempts=1,
                result=1,
                updated_at=mstore.clock.now(),
            )
        )
    async with running(mstore):  # not failed: it waits, saying why, until code matches

        async def waits() -> bool:
            return "something_else" in ((await status(mstore, run_id)).waiting_for or "")

        await until(waits)
    assert (await status(mstore, run_id)).status == "running"
    assert calls["double"] == 0


flaky_failures: list[BaseException] = []


@step(retry=RetryPolicy(max_attempts=4, initial_delay=10, multiplier=2, jitter=False))
async def flaky(ctx: StepContext) -> int:
    calls["flaky"] += 1
    if flaky_failures:
        raise flaky_failures.pop(0)
    return ctx.attempt


@workflow(name="tests.engine.flaky")
async def uses_flaky(ctx: WorkflowContext) -> int:
    return await flaky()


async def test_a_transient_failure_is_retried_at_the_persisted_time(
    mstore: Store, clock: ManualClock
) -> None:
    flaky_failures[:] = [TransientError("503"), TransientError("503")]
    run_id = await submit(mstore, uses_flaky)
    async with running(mstore):
        await until(lambda: _step_attempts(mstore, run_id, 1))
        [row] = await run_steps_of(mstore, run_id)
        assert row.status == "retrying"
        assert row.next_attempt_at == clock.now() + timedelta(seconds=10)
    async with running(mstore):  # a restart keeps the time; nothing runs before it
        await asyncio.sleep(0.2)
        assert calls["flaky"] == 1
        clock.advance(10)
        await until(lambda: _step_attempts(mstore, run_id, 2))
        [row] = await run_steps_of(mstore, run_id)
        assert row.next_attempt_at == clock.now() + timedelta(seconds=20)  # backoff doubled
        clock.advance(20)
        assert await result(mstore, run_id, wait=10) == 3


async def test_retry_after_from_the_server_sets_the_next_attempt(
    mstore: Store, clock: ManualClock
) -> None:
    flaky_failures[:] = [TransientError("429", retry_after=120)]
    run_id = await submit(mstore, uses_flaky)
    async with running(mstore):
        await until(lambda: _step_attempts(mstore, run_id, 1))
        [row] = await run_steps_of(mstore, run_id)
        assert row.next_attempt_at == clock.now() + timedelta(seconds=120)


async def test_a_step_that_exhausts_its_attempts_fails_the_run(
    mstore: Store, no_backoff: None
) -> None:
    flaky_failures[:] = [TransientError("503")] * 4
    run_id = await submit(mstore, uses_flaky)
    async with running(mstore):
        with pytest.raises(RunFailed, match="flaky failed"):
            await result(mstore, run_id, wait=10)
    assert calls["flaky"] == 4


async def test_a_permanent_error_is_not_retried(mstore: Store) -> None:
    from convergent.errors import PermanentError

    flaky_failures[:] = [PermanentError("card declined")]
    run_id = await submit(mstore, uses_flaky)
    async with running(mstore):
        with pytest.raises(RunFailed, match="card declined"):
            await result(mstore, run_id, wait=10)
    assert calls["flaky"] == 1


remote: dict[str, int] = {}


@step
async def pay(ctx: StepContext, amount: int) -> int:
    calls["pay"] += 1
    remote[ctx.idempotency_key] = amount
    return amount


@pay.reconciler
async def find_payment(ctx: StepContext, amount: int) -> int | None:
    calls["reconcile"] += 1
    return remote.get(ctx.idempotency_key)


@workflow(name="tests.engine.pays")
async def pays(ctx: WorkflowContext, amount: int) -> int:
    return await pay(amount)


async def test_an_unknown_outcome_is_reconciled_before_a_new_attempt(mstore: Store) -> None:
    run_id = await submit(mstore, pays, 7)
    key = f"{run_id}:1:pay"
    remote[key] = 7  # the first attempt reached the provider, then its worker died
    async with mstore.begin() as conn:
        await conn.execute(
            sa.insert(run_steps).values(
                run_id=run_id,
                seq=1,
                kind="step",
                name="pay",
                status="started",
                idempotency_key=key,
                attempts=1,
                updated_at=mstore.clock.now(),
            )
        )
    async with running(mstore):
        assert await result(mstore, run_id, wait=10) == 7
    assert calls == Counter({"reconcile": 1})


async def test_a_reconcile_that_finds_nothing_lets_the_step_run(mstore: Store) -> None:
    run_id = await submit(mstore, pays, 5)
    async with mstore.begin() as conn:
        await conn.execute(
            sa.insert(run_steps).values(
                run_id=run_id,
                seq=1,
                kind="step",
                name="pay",
                status="started",
                idempotency_key=f"{run_id}:1:pay",
                attempts=1,
                updated_at=mstore.clock.now(),
            )
        )
    async with running(mstore):
        assert await result(mstore, run_id, wait=10) == 5
    assert calls == Counter({"reconcile": 1, "pay": 1})


async def test_start_inside_the_callers_transaction_rolls_back_with_it(mstore: Store) -> None:
    with pytest.raises(RuntimeError):
        async with mstore.begin() as conn:
            await start(conn, twice, 1, key="lost")
            raise RuntimeError("the caller's change failed")
    async with mstore.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(runs)) == 0


@workflow(name="tests.engine.signalled")
async def signalled(ctx: WorkflowContext, x: int) -> int:
    got = await ctx.wait_for("go", timeout=3600)
    return await double(x + (got or {}).get("add", 0))


async def _waiting(store: Store, run_id: uuid.UUID) -> bool:
    info = await status(store, run_id)
    return info.lease_owner is None and info.status == "running"


async def test_runs_started_and_signalled_in_a_transaction_follow_the_stores_clock(
    database_url: str,
) -> None:
    """start(conn) and send(conn) used the system clock: on a clock set in the past, the run
    (or its wake-up) was due years from now, and it stayed pending forever."""
    past = ManualClock(datetime(2001, 1, 1, tzinfo=UTC))
    async with Store(database_url, clock=past) as store:
        async with store.begin() as conn:
            run_id = await start(conn, signalled, 3)
        async with running(store):
            await until(lambda: _waiting(store, run_id))  # claimed: it was due at once
            async with store.begin() as conn:
                assert await send(conn, run_id, "go", {"add": 1}, dedupe_key="go")
            assert await result(store, run_id, wait=10) == 8  # the wake-up was due at once too
        assert (await status(store, run_id)).created_at == past.now()


async def _has_step(store: Store, run_id: uuid.UUID, seq: int) -> bool:
    return any(s.seq >= seq for s in await run_steps_of(store, run_id))


async def _step_attempts(store: Store, run_id: uuid.UUID, attempts: int) -> bool:
    return any(s.attempts >= attempts for s in await run_steps_of(store, run_id))


async def test_concurrent_starts_with_one_key_make_one_run(mstore: Store) -> None:
    ids = await asyncio.gather(*(submit(mstore, twice, i, key="same") for i in range(5)))
    assert len(set(ids)) == 1
    async with mstore.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(runs)) == 1


async def test_a_local_worker_runs_a_run_started_many_times_with_one_key_once(
    mstore: Store, clock: ManualClock
) -> None:
    async with running(mstore):
        ids = await asyncio.gather(*(submit(mstore, twice, 3, key="k") for _ in range(5)))
        assert len(set(ids)) == 1
        await until(lambda: _has_step(mstore, ids[0], 2))
        clock.advance(61)
        assert await result(mstore, ids[0], wait=10) == 12
    assert calls["double"] == 2


@workflow(name="tests.engine.nap")
async def nap(ctx: WorkflowContext) -> str:
    await ctx.sleep(0.2)
    return "awake"


async def test_a_worker_wakes_for_its_own_timer_without_waiting_for_a_poll(store: Store) -> None:
    run_id = await submit(store, nap)
    async with running(store, poll_interval=30):
        assert await result(store, run_id, wait=5) == "awake"


async def test_a_timer_that_falls_due_before_its_run_is_parked_still_wakes_the_worker(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded database commits the parked run after its timer is due: the claim at the timer
    must not find the run still held and then sleep until the next poll."""
    from convergent.workflows._committer import Committer

    slow = Committer.write

    async def write_slowly(self: Committer, statement: Any, params: dict[str, Any]) -> None:
        if "b_until" in params:  # the run parked until its timer: committed after the timer
            await asyncio.sleep(0.5)
        await slow(self, statement, params)

    monkeypatch.setattr(Committer, "write", write_slowly)
    run_id = await submit(store, nap)
    async with running(store, poll_interval=30):
        assert await result(store, run_id, wait=5) == "awake"
