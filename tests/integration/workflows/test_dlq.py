"""One dead-letter queue for every source: a workflow letter's retry resumes its run (or runs a
dead compensation again), a webhook letter's redelivers it; bulk actions by filter; each action
recorded with who did it, in the run's history too."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from convergent import dlq
from convergent.cli import app
from convergent.clock import ManualClock
from convergent.errors import InvalidTransition, NotFound, PermanentError, RunFailed
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import dead_letters, operator_actions, runs, webhook_deliveries
from convergent.webhooks import AllowList, create_endpoint, enqueue
from convergent.workflows import (
    Saga,
    StepContext,
    Worker,
    WorkflowContext,
    history,
    result,
    status,
    step,
    submit,
    workflow,
)
from tests.integration.workflows.conftest import running

calls: Counter[str] = Counter()
broken: set[str] = set()


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()
    broken.clear()


@step
async def act(ctx: StepContext, name: str) -> str:
    calls[name] += 1
    if name in broken:
        raise PermanentError(f"{name} is broken")
    return name


@workflow(name="tests.dlq.simple")
async def simple(ctx: WorkflowContext) -> str:
    return await act("a")


@step
async def undo(ctx: StepContext, name: str) -> None:
    await act.fn(ctx, f"undo {name}")


@workflow(name="tests.dlq.saga")
async def with_saga(ctx: WorkflowContext) -> str:
    async with Saga() as saga:
        await saga.step(act, "a", compensate=undo)
        return await saga.step(act, "b")


async def _given_up_by_the_sweeper(store: Store, clock: ManualClock) -> uuid.UUID:
    """A run whose worker died too often: the sweeper fails it and dead-letters it."""
    run_id = await submit(store, simple)
    async with store.begin() as conn:
        await conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                status="running",
                lease_owner="gone",
                lease_until=clock.now() - timedelta(seconds=1),
                attempts=9,
            )
        )
    assert await Worker(store, max_run_attempts=10).sweep() == 1
    assert (await status(store, run_id)).status == "failed"
    return run_id


async def test_retrying_a_workflow_letter_resumes_the_run(
    mstore: Store, clock: ManualClock
) -> None:
    run_id = await _given_up_by_the_sweeper(mstore, clock)
    (letter,) = await dlq.list_letters(mstore, dlq.LetterFilter(source="workflow"))
    assert letter.source_ref == str(run_id)
    shown = await dlq.show(mstore, letter.id)
    assert shown.attempts == 10
    assert "died" in shown.reason
    assert shown.payload is not None
    await dlq.retry(mstore, letter.id, actor="dana")
    async with running(mstore):
        assert await result(mstore, run_id, wait=10) == "a"
    assert (await dlq.show(mstore, letter.id)).status == "retried"
    entries = await history(mstore, run_id)
    assert [(e.actor, e.action) for e in entries] == [("dana", "dead_letter.retry")]
    with pytest.raises(InvalidTransition, match="already retried"):
        await dlq.retry(mstore, letter.id)
    with pytest.raises(NotFound):
        await dlq.retry(mstore, uuid.uuid4())


async def test_retrying_a_dead_compensation_runs_it_again(mstore: Store) -> None:
    broken.update({"b", "undo a"})  # b fails, then its compensation fails for good
    run_id = await submit(mstore, with_saga)
    async with running(mstore):
        with pytest.raises(RunFailed, match="b is broken"):
            await result(mstore, run_id, wait=10)
        (letter,) = await dlq.list_letters(mstore, dlq.LetterFilter(source="workflow"))
        assert letter.source_ref.startswith(f"{run_id}:")
        broken.discard("undo a")  # the compensation's fix is deployed
        await dlq.retry(mstore, letter.id, actor="dana")
        with pytest.raises(RunFailed, match="b is broken"):  # it ends as it did, undone now
            await result(mstore, run_id, wait=10)
    assert calls == {"a": 1, "b": 1, "undo a": 2}
    assert (await dlq.show(mstore, letter.id)).status == "retried"


async def test_a_webhook_letter_is_redelivered_and_bulk_actions_filter(mstore: Store) -> None:
    async with mstore.begin() as conn:
        endpoint, _ = await create_endpoint(
            conn,
            "http://127.0.0.1:9/hook",
            allow=AllowList(hosts=frozenset({"127.0.0.1"})),
        )
        message_id = await enqueue(conn, "order.paid", {"id": 1})
        for source, ref, name, key in [
            ("webhook", str(uuid7()), str(endpoint.id), str(message_id)),
            ("outbox", str(uuid7()), "orders", "k1"),
            ("outbox", str(uuid7()), "orders", "k2"),
        ]:
            await conn.execute(
                dead_letters.insert().values(
                    id=uuid7(),
                    source=source,
                    source_ref=ref,
                    name=name,
                    key=key,
                    payload={"data": 1} if source == "webhook" else None,
                    reason="gave up",
                    attempts=8,
                    created_at=mstore.clock.now(),
                )
            )
    d = webhook_deliveries.c
    async with mstore.read() as conn:
        before = await conn.scalar(sa.select(sa.func.count()).where(d.message_id == message_id))
    bulk = await dlq.retry_matching(mstore, dlq.LetterFilter(source="webhook"), actor="erin")
    assert len(bulk.done) == 1
    assert not bulk.failed
    async with mstore.read() as conn:
        after = await conn.scalar(sa.select(sa.func.count()).where(d.message_id == message_id))
    assert after == (before or 0) + 1  # a new delivery of the same message
    gone = await dlq.discard_matching(mstore, dlq.LetterFilter(name="orders"), actor="erin")
    assert len(gone.done) == 2
    assert await dlq.list_letters(mstore) == []
    o = operator_actions.c
    async with mstore.read() as conn:
        recorded = (
            await conn.execute(
                sa.select(o.actor, o.action).where(o.target_kind == "dead_letter").order_by(o.at)
            )
        ).all()
    assert sorted(a for _, a in recorded) == ["dead_letter.discard"] * 2 + ["dead_letter.retry"]
    assert {actor for actor, _ in recorded} == {"erin"}


def test_the_cli_resumes_runs_and_retries_letters_with_clear_errors(sqlite_url: str) -> None:
    cli = CliRunner()
    db = ["--database-url", sqlite_url]
    out = cli.invoke(app, ["runs", "resume", str(uuid.uuid4()), *db])
    assert out.exit_code == 1
    assert "runs list" in out.output
    out = cli.invoke(app, ["dlq", "retry", *db])
    assert out.exit_code == 1
    assert "--all" in out.output
    out = cli.invoke(app, ["dlq", "retry", "--all", "--source", "workflow", *db])
    assert out.exit_code == 0, out.output
    assert "retried 0" in out.output


async def test_the_cli_resumes_a_failed_run_and_records_the_user(sqlite_url: str) -> None:
    import asyncio

    broken.add("a")
    async with Store(sqlite_url) as store:
        run_id = await submit(store, simple)
        async with running(store):
            with pytest.raises(RunFailed):
                await result(store, run_id, wait=10)
        broken.clear()
        db = ["--database-url", sqlite_url]
        cli = CliRunner()
        out = await asyncio.to_thread(cli.invoke, app, ["runs", "retry-step", str(run_id), *db])
        assert out.exit_code == 1
        assert "resume it" in out.output
        out = await asyncio.to_thread(cli.invoke, app, ["runs", "resume", str(run_id), *db])
        assert out.exit_code == 0, out.output
        assert "from position 1" in out.output
        async with running(store):
            assert await result(store, run_id, wait=10) == "a"
        out = await asyncio.to_thread(cli.invoke, app, ["runs", "show", str(run_id), *db])
        assert "run.resume" in out.output
        assert "cli:" in out.output
        out = await asyncio.to_thread(cli.invoke, app, ["runs", "cancel", str(run_id), *db])
        assert out.exit_code == 1
        assert "already completed" in out.output


async def test_resending_a_webhook_outside_the_dlq_resolves_its_letter(mstore: Store) -> None:
    from convergent.webhooks import resend

    async with mstore.begin() as conn:
        endpoint, _ = await create_endpoint(
            conn, "http://127.0.0.1:9/hook", allow=AllowList(hosts=frozenset({"127.0.0.1"}))
        )
        message_id = await enqueue(conn, "order.paid", {"id": 2})
        await conn.execute(
            dead_letters.insert().values(
                id=uuid7(),
                source="webhook",
                source_ref=str(uuid7()),
                name=str(endpoint.id),
                key=str(message_id),
                reason="gave up",
                attempts=8,
                created_at=mstore.clock.now(),
            )
        )
    async with mstore.begin() as conn:
        await resend(conn, message_id, endpoint.id)
    assert await dlq.list_letters(mstore) == []
    (letter,) = await dlq.list_letters(mstore, dlq.LetterFilter(status="retried"))
    assert letter.key == str(message_id)
