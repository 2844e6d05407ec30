"""Operator actions: the same functions the CLI calls, admin only, and always recorded."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from convergent.auth import Principal
from convergent.console import ACTIONS, perform
from convergent.console.actions import ActionFailed
from convergent.errors import NotFound
from convergent.ids import uuid7
from convergent.messages import Message
from convergent.store import Store
from convergent.store.schema import dead_letters, operator_actions, outbox, runs
from convergent.webhooks import create_endpoint
from convergent.workflows import Workflow, status, submit

ADMIN = Principal(uuid7(), "ops-alice", True)


async def _noop(ctx: object) -> None:
    return None


WORKFLOW: Workflow[[], None] = Workflow(_noop, "console.test.noop", "default")


async def _records(store: Store) -> list[tuple[str, str, str, str]]:
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(
                operator_actions.c.actor,
                operator_actions.c.action,
                operator_actions.c.target_id,
                operator_actions.c.outcome,
            ).order_by(operator_actions.c.at, operator_actions.c.id)
        )
        return [tuple(r) for r in rows]


async def _outbox_letter(store: Store, key: str) -> uuid.UUID:
    letter_id = uuid7()
    msg = Message(topic="t.console", key=key, type="x", data={"k": key})
    async with store.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=letter_id,
                source="outbox",
                source_ref="r",
                name="t.console",
                key=key,
                payload={"topic": "t.console", "key": key, "envelope": msg.to_envelope()},
                reason="gave up",
                attempts=5,
                status="dead",
                created_at=store.clock.now(),
            )
        )
    return letter_id


async def test_cancel_a_run_is_performed_and_recorded_with_who_and_outcome(store: Store) -> None:
    run_id = await submit(store, WORKFLOW, key="cancel-me")
    outcome = await perform(store, ADMIN, "run.cancel", str(run_id), {})
    assert outcome.ok, outcome.message
    assert (await status(store, run_id)).status == "cancelled"
    assert await _records(store) == [("ops-alice", "run.cancel", str(run_id), "ok")]
    again = await perform(store, ADMIN, "run.cancel", str(run_id), {})
    assert not again.ok
    assert "already cancelled" in again.message
    assert (await _records(store))[-1][3] == "failed"


async def test_retry_of_a_dead_letter_republishes_it_and_marks_it_retried(store: Store) -> None:
    letter_id = await _outbox_letter(store, "k1")
    outcome = await perform(store, ADMIN, "dead_letter.retry", str(letter_id), {})
    assert outcome.ok, outcome.message
    async with store.read() as conn:
        assert await conn.scalar(sa.select(dead_letters.c.status)) == "retried"
        assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == 1


async def test_bulk_actions_apply_to_every_dead_letter_the_filter_matches(store: Store) -> None:
    for key in ("a", "b", "c"):
        await _outbox_letter(store, key)
    outcome = await perform(store, ADMIN, "dead_letters.discard", "", {"key": "b", "ignored": "x"})
    assert outcome.message == "discarded 1 dead letter(s)"
    outcome = await perform(store, ADMIN, "dead_letters.retry", "", {})
    assert outcome.message == "retried 2 dead letter(s)"
    async with store.read() as conn:
        states = dict(
            (await conn.execute(sa.select(dead_letters.c.key, dead_letters.c.status))).all()
        )
    assert states == {"a": "retried", "b": "discarded", "c": "retried"}
    recorded = await _records(store)
    assert [r[1] for r in recorded] == ["dead_letters.discard", "dead_letters.retry"]


async def test_enable_and_disable_a_webhook_endpoint(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENT_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    async with store.begin() as conn:
        endpoint, _ = await create_endpoint(conn, "http://127.0.0.1:9/h")
    assert (await perform(store, ADMIN, "webhook.disable", str(endpoint.id), {})).ok
    async with store.read() as conn:
        from convergent.webhooks import get_endpoint

        assert not (await get_endpoint(conn, endpoint.id)).enabled
    assert (await perform(store, ADMIN, "webhook.enable", str(endpoint.id), {})).ok


async def test_actions_need_an_admin_and_a_known_name(store: Store) -> None:
    viewer = Principal(uuid7(), "viewer", False)
    with pytest.raises(ActionFailed, match="not an admin key"):
        await perform(store, viewer, "run.cancel", str(uuid7()), {})
    with pytest.raises(NotFound, match="no action"):
        await perform(store, ADMIN, "run.explode", "x", {})
    bad = await perform(store, ADMIN, "run.cancel", "not-a-uuid", {})
    assert not bad.ok
    assert await _records(store) == [("ops-alice", "run.cancel", "not-a-uuid", "failed")]
    assert {"run.cancel", "dead_letter.retry", "webhook.resend"} <= set(ACTIONS)
    async with store.read() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(runs)) == 0


async def test_pause_resume_and_trigger_a_schedule(store: Store) -> None:
    from convergent.workflows.schedules import Schedule, Ticks, list_schedules, sync_schedules

    # built directly, not with schedule(): that would declare it for every later test
    nightly = Schedule("nightly", WORKFLOW, Ticks(None, 3600.0, "UTC"), "latest", (), None, 60, 100)
    await sync_schedules(store, [nightly])
    paused = await perform(store, ADMIN, "schedule.pause", "nightly", {})
    assert (paused.ok, paused.message) == (True, "schedule nightly paused")
    assert [s.paused for s in await list_schedules(store)] == [True]
    assert (await perform(store, ADMIN, "schedule.resume", "nightly", {})).ok
    assert (await perform(store, ADMIN, "schedule.trigger", "nightly", {})).ok
    [info] = await list_schedules(store)
    assert not info.paused
    assert info.triggered_at is not None
    unknown = await perform(store, ADMIN, "schedule.pause", "weekly", {})
    assert not unknown.ok
    assert "no schedule named 'weekly'" in unknown.message
    assert [(r[1], r[3]) for r in await _records(store)] == [
        ("schedule.pause", "ok"),
        ("schedule.resume", "ok"),
        ("schedule.trigger", "ok"),
        ("schedule.pause", "failed"),
    ]
