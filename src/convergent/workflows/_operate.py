"""Operating runs: resume a failed run from its checkpoints, retry a step now, and the run's
history of who did what to it.

Each action joins the caller's transaction (it takes its connection) and records itself in
``convergent_operator_actions`` (target ``run``) when given an ``actor``, in that transaction, so
the action and its record commit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import RunNotFound, RunNotResumable
from convergent.ids import uuid7
from convergent.store import Store, store_of
from convergent.store.schema import dead_letters, operator_actions, run_events, run_steps, runs
from convergent.workflows._statements import ACTIVE, RUNS_CHANNEL

__all__ = [
    "RunAction",
    "history",
    "record_action",
    "reopen_compensation",
    "resume",
    "retry_step",
]


@dataclass(frozen=True)
class RunAction:
    """One entry of a run's history: who did what, when, and how it ended."""

    at: datetime
    actor: str
    action: str
    params: dict[str, Any] | None
    outcome: str
    detail: str | None


async def record_action(
    conn: AsyncConnection,
    *,
    actor: str,
    action: str,
    target_kind: str,
    target_id: str,
    params: dict[str, Any] | None = None,
    detail: str | None = None,
) -> None:
    """Record an operator action that took effect in this transaction."""
    await conn.execute(
        operator_actions.insert().values(
            id=uuid7(),
            at=store_of(conn).clock.now(),
            actor=actor[:255],
            action=action,
            target_kind=target_kind,
            target_id=target_id[:255],
            params=params or None,
            outcome="ok",
            detail=detail,
        )
    )


async def history(store: Store, run_id: uuid.UUID) -> list[RunAction]:
    """What people and tools did to the run, oldest first."""
    o = operator_actions.c
    async with store.read() as conn:
        rows = (
            await conn.execute(
                sa.select(operator_actions)
                .where(o.target_kind == "run", o.target_id == str(run_id))
                .order_by(o.at, o.id)
            )
        ).all()
    return [RunAction(r.at, r.actor, r.action, r.params, r.outcome, r.detail) for r in rows]


async def _locked_run(conn: AsyncConnection, run_id: uuid.UUID) -> Any:
    stmt = sa.select(runs).where(runs.c.id == run_id)
    row = (await conn.execute(store_of(conn).sql.lock_row(stmt))).first()
    if row is None:
        raise RunNotFound(f"no run {run_id}: copy a run id from `convergent runs list`")
    return row


async def resume(
    conn: AsyncConnection,
    run_id: uuid.UUID,
    *,
    from_step: int | None = None,
    actor: str | None = None,
) -> int:
    """Put a failed run (or one cancelled by an error, not on request: a cancelled child run it
    awaited) back to work from its checkpoints, in the caller's transaction; returns the
    position it goes on from.

    The failed step (or, with ``from_step``, that position and every one after it) is forgotten
    and runs again with the same idempotency keys; completed steps before it answer from their
    checkpoints. Deploy the fix first: the run is due at once.

    A run that waits for code matching its history (``waiting_for``: a deploy changed the
    workflow) resumes too: ``from_step`` at the position that no longer matches lets the new
    code go on from there.
    """
    row = await _locked_run(conn, run_id)
    parked = row.status in ACTIVE and row.waiting_for is not None and row.lease_owner is None
    if row.status in ACTIVE and not parked:
        raise RunNotResumable(
            f"run {run_id} is still {row.status}: it goes on by itself (use `convergent runs "
            "retry-step` to skip a step's backoff, or cancel it)"
        )
    if row.status == "completed":
        raise RunNotResumable(f"run {run_id} completed: nothing to resume; start a new run")
    if row.status == "cancelled" and (
        row.cancel_requested or row.error == "cancelled before it started"
    ):
        raise RunNotResumable(
            f"run {run_id} was cancelled on request: start a new run instead of resuming it"
        )
    c = run_steps.c
    steps = (
        await conn.execute(
            sa.select(c.seq, c.kind, c.status).where(c.run_id == run_id).order_by(c.seq)
        )
    ).all()
    last = steps[-1].seq if steps else 0
    # a saga's marker: the run was undoing its steps. Only one given up on mid-way (its
    # workers kept dying) goes on, to finish undoing; going forward would build on undone work
    undoing = any(s.kind == "compensate" for s in steps)
    if undoing and (from_step is not None or not await _given_up(conn, run_id)):
        raise RunNotResumable(
            f"run {run_id} compensated (its saga undid the steps it had completed): going on "
            "would build on undone work; start a new run"
        )
    if from_step is not None and not 1 <= from_step <= last + 1:
        raise RunNotResumable(
            f"run {run_id} has checkpoints 1 to {last}: resume from one of them (or {last + 1}, "
            "the next)"
        )
    failed = [s.seq for s in steps if s.status == "failed" and not undoing]
    start = from_step if from_step is not None else (failed[0] if failed else last + 1)
    await _forget_from(conn, run_id, start)
    if undoing:
        state = "compensating"
    elif parked:
        state = row.status
    else:
        state = "running" if start > 1 else "pending"
    now = store_of(conn).clock.now()
    await conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            status=state,
            cancel_requested=row.cancel_requested and undoing,  # a cancel still being undone
            result=None,
            error=None,
            attempts=0,
            next_at=now,
            lease_owner=None,
            lease_until=None,
            waiting_for=None,
            updated_at=now,
        )
    )
    d = dead_letters.c
    await conn.execute(
        sa.update(dead_letters)
        .where(
            d.source == "workflow",
            d.status == "dead",
            sa.or_(d.source_ref == str(run_id), d.source_ref.like(f"{run_id}:%")),
        )
        .values(status="retried", resolved_at=now)
    )
    if actor is not None:
        await record_action(
            conn,
            actor=actor,
            action="run.resume",
            target_kind="run",
            target_id=str(run_id),
            params={"from_step": from_step} if from_step is not None else None,
            detail=f"resumed from position {start} (was {row.status}: {row.error})",
        )
    await store_of(conn).notifier.notify(conn, RUNS_CHANNEL)
    return start


async def _given_up(conn: AsyncConnection, run_id: uuid.UUID) -> bool:
    """The sweeper gave the run up (its workers kept dying): its dead letter is still open."""
    d = dead_letters.c
    found = await conn.scalar(
        sa.select(d.id).where(
            d.source == "workflow", d.source_ref == str(run_id), d.status == "dead"
        )
    )
    return found is not None


async def _forget_from(conn: AsyncConnection, run_id: uuid.UUID, seq: int) -> None:
    """Drop the checkpoints from ``seq`` on; the events they consumed can be taken again."""
    await conn.execute(
        sa.delete(run_steps).where(run_steps.c.run_id == run_id, run_steps.c.seq >= seq)
    )
    ev = run_events.c
    await conn.execute(
        sa.update(run_events)
        .where(ev.run_id == run_id, ev.consumed_seq >= seq)
        .values(consumed_seq=None)
    )


async def retry_step(conn: AsyncConnection, run_id: uuid.UUID, *, actor: str | None = None) -> int:
    """Make the run's step that waits out a retry backoff due now; returns its position."""
    row = await _locked_run(conn, run_id)
    if row.status not in ACTIVE:
        hint = "resume it" if row.status == "failed" else "start a new run"
        raise RunNotResumable(f"run {run_id} is {row.status}, no step waits to retry: {hint}")
    c = run_steps.c
    waiting = (
        await conn.execute(
            sa.select(c.seq, c.name)
            .where(c.run_id == run_id, c.status == "retrying")
            .order_by(c.seq.desc())
            .limit(1)
        )
    ).first()
    if waiting is None:
        raise RunNotResumable(
            f"run {run_id} has no step waiting to retry (`convergent runs show {run_id}` "
            "shows where it is)"
        )
    now = store_of(conn).clock.now()
    await conn.execute(
        sa.update(run_steps)
        .where(c.run_id == run_id, c.seq == waiting.seq)
        .values(next_attempt_at=now, updated_at=now)
    )
    await conn.execute(
        sa.update(runs).where(runs.c.id == run_id).values(next_at=now, updated_at=now)
    )
    if actor is not None:
        await record_action(
            conn,
            actor=actor,
            action="run.retry_step",
            target_kind="run",
            target_id=str(run_id),
            params={"seq": waiting.seq},
            detail=f"step {waiting.name} (position {waiting.seq}) due now",
        )
    await store_of(conn).notifier.notify(conn, RUNS_CHANNEL)
    return int(waiting.seq)


async def reopen_compensation(
    conn: AsyncConnection, run_id: uuid.UUID, seq: int, *, actor: str | None = None
) -> None:
    """Run a dead-lettered compensation (position ``seq``) again: the run replays, its saga
    reaches that compensation, and the run ends as it did (failed or cancelled) once it is done.
    """
    row = await _locked_run(conn, run_id)
    if row.status in ACTIVE:
        raise RunNotResumable(f"run {run_id} is still {row.status}: let it finish first")
    c = run_steps.c
    step = (await conn.execute(sa.select(c.status).where(c.run_id == run_id, c.seq == seq))).first()
    if step is None or step.status != "failed":
        raise RunNotResumable(f"run {run_id} has no failed compensation at position {seq}")
    await conn.execute(sa.delete(run_steps).where(c.run_id == run_id, c.seq == seq))
    now = store_of(conn).clock.now()
    await conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            status="compensating",
            next_at=now,
            lease_owner=None,
            lease_until=None,
            attempts=0,
            updated_at=now,
        )
    )
    if actor is not None:
        await record_action(
            conn,
            actor=actor,
            action="run.retry_compensation",
            target_kind="run",
            target_id=str(run_id),
            params={"seq": seq},
        )
    await store_of(conn).notifier.notify(conn, RUNS_CHANNEL)
