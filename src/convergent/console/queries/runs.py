"""Runs: the filtered list (newest first, keyset on the UUIDv7 id) and one run's whole story."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.console.queries.paging import (
    Page,
    decode_cursor,
    encode_cursor,
    id_floor,
    parse_uuid,
)
from convergent.errors import RunNotFound
from convergent.store.schema import (
    dead_letters,
    operator_actions,
    run_children,
    run_events,
    run_steps,
    runs,
)

__all__ = [
    "RUN_STATES",
    "RunDetail",
    "RunFilter",
    "TimelineEntry",
    "find_runs",
    "run_detail",
]

RUN_STATES = ("pending", "running", "compensating", "completed", "failed", "cancelled")
_FINAL = ("completed", "failed", "cancelled")
# a step's idempotency key is "<run id>:<position>:<step name>"
_STEP_KEY = re.compile(r"^([0-9a-fA-F-]{32,36}):\d+:")
_LIST_COLUMNS = (
    runs.c.id,
    runs.c.workflow,
    runs.c.key,
    runs.c.queue,
    runs.c.status,
    runs.c.error,
    runs.c.attempts,
    runs.c.created_at,
    runs.c.updated_at,
)


@dataclass(frozen=True)
class RunFilter:
    """What the Runs page filters by; ``q`` searches a run id, a step's idempotency key (the key
    sent to the system it called) or a run's own key (its business key, e.g. an order id)."""

    workflow: str | None = None
    status: str | None = None
    queue: str | None = None
    max_age: timedelta | None = None
    key: str | None = None
    q: str | None = None


def _search(q: str) -> sa.ColumnElement[bool]:
    q = q.strip()
    run_id = parse_uuid(q)
    if run_id is None and (m := _STEP_KEY.match(q)):
        run_id = parse_uuid(m.group(1))
    if run_id is not None:
        return runs.c.id == run_id
    return runs.c.key == q


async def find_runs(
    conn: AsyncConnection,
    f: RunFilter,
    *,
    now: datetime,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[Any]:
    """One page of runs matching ``f``, newest first."""
    stmt = sa.select(*_LIST_COLUMNS).order_by(runs.c.id.desc()).limit(limit + 1)
    if f.workflow:
        stmt = stmt.where(runs.c.workflow == f.workflow)
    if f.status:
        stmt = stmt.where(runs.c.status == f.status)
    if f.queue:
        stmt = stmt.where(runs.c.queue == f.queue)
    if f.max_age is not None:
        stmt = stmt.where(runs.c.id >= id_floor(now - f.max_age))
    if f.key:
        stmt = stmt.where(runs.c.key == f.key.strip())
    if f.q:
        stmt = stmt.where(_search(f.q))
    if cursor:
        (last,) = decode_cursor(cursor, 1)
        stmt = stmt.where(runs.c.id < uuid.UUID(last))
    rows = list((await conn.execute(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor([rows[-1].id]) if more else None)


@dataclass(frozen=True)
class TimelineEntry:
    """One durable call of a run, as the console shows it."""

    seq: int
    kind: str  # step | sleep | wait
    name: str
    status: str
    phase: str  # forward | compensation
    attempts: int
    idempotency_key: str
    started_at: datetime | None
    ended_at: datetime | None
    next_attempt_at: datetime | None
    result: Any
    error: str | None
    detail: str = ""


@dataclass(frozen=True)
class RunDetail:
    run: Any
    timeline: list[TimelineEntry]
    events: list[Any]
    dead_letters: list[Any]
    actions: list[Any]
    children: list[Any] = field(default_factory=list)  # id, workflow, status, seq, link
    parent: Any = None  # the run that started this one as a child (id, workflow, status)


def _timeline(run: Any, steps: list[Any]) -> list[TimelineEntry]:
    # Compensations are steps too; they are the ones recorded after the saga's marker, or in
    # runs from before markers, after the forward step that failed or that a cancel
    # interrupted (left retrying or started in a final run).
    marker = next((s.seq for s in steps if s.kind == "compensate"), None)
    broken = (
        marker
        if marker is not None
        else next(
            (
                s.seq
                for s in steps
                if s.kind == "step"
                and (s.status == "failed" or (run.status in _FINAL and s.status != "completed"))
            ),
            None,
        )
    )
    out = []
    for s in steps:
        meta = s.result if isinstance(s.result, dict) else {}
        started = getattr(s, "first_attempt_at", None) or (
            _time(meta.get("first_attempt_at")) if s.status != "completed" else None
        )
        detail = ""
        if s.kind == "sleep":
            detail = f"until {meta.get('until')}"
        elif s.kind == "wait":
            if s.status == "completed":
                detail = "received" if meta.get("received") else "timed out"
            else:
                detail = f"deadline {meta.get('deadline') or 'none'}"
        out.append(
            TimelineEntry(
                seq=s.seq,
                kind=s.kind,
                name=s.name,
                status=s.status,
                phase="compensation" if broken is not None and s.seq > broken else "forward",
                attempts=s.attempts,
                idempotency_key=s.idempotency_key,
                started_at=started,
                ended_at=s.updated_at if s.status in ("completed", "failed") else None,
                next_attempt_at=s.next_attempt_at,
                result=None if s.status != "completed" or s.kind != "step" else s.result,
                error=s.error,
                detail=detail,
            )
        )
    return out


def _time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


async def run_detail(conn: AsyncConnection, run_id: uuid.UUID) -> RunDetail:
    run = (await conn.execute(sa.select(runs).where(runs.c.id == run_id))).first()
    if run is None:
        raise RunNotFound(f"no run {run_id}")
    steps = (
        await conn.execute(
            sa.select(run_steps).where(run_steps.c.run_id == run_id).order_by(run_steps.c.seq)
        )
    ).all()
    events = (
        await conn.execute(
            sa.select(run_events)
            .where(run_events.c.run_id == run_id)
            .order_by(run_events.c.created_at, run_events.c.id)
            .limit(200)
        )
    ).all()
    ref = str(run_id)
    ch = run_children.c
    letters = (
        await conn.execute(
            sa.select(dead_letters)
            .where(
                dead_letters.c.source == "workflow",
                sa.or_(
                    dead_letters.c.source_ref == ref, dead_letters.c.source_ref.like(f"{ref}:%")
                ),
            )
            .order_by(dead_letters.c.id)
        )
    ).all()
    return RunDetail(
        run=run,
        timeline=_timeline(run, list(steps)),
        events=list(events),
        dead_letters=list(letters),
        actions=await _run_actions(conn, ref, [str(letter.id) for letter in letters]),
        children=list(
            (
                await conn.execute(
                    sa.select(
                        runs.c.id, runs.c.workflow, runs.c.status, ch.seq, ch.status.label("link")
                    )
                    .join(run_children, ch.child_id == runs.c.id)
                    .where(ch.parent_id == run_id)
                    .order_by(ch.seq)
                    .limit(500)
                )
            ).all()
        ),
        parent=(
            await conn.execute(
                sa.select(runs.c.id, runs.c.workflow, runs.c.status)
                .join(run_children, ch.parent_id == runs.c.id)
                .where(ch.child_id == run_id)
                .limit(1)
            )
        ).first(),
    )


async def _run_actions(conn: AsyncConnection, run_ref: str, letter_ids: list[str]) -> list[Any]:
    """Actions on the run and on its dead letters (a letter retried from the Dead letters page
    is recorded on the letter; `convergent dlq` records it on both: shown once)."""
    a = operator_actions.c
    on_letters = (
        sa.and_(a.target_kind == "dead_letter", a.target_id.in_(letter_ids))
        if letter_ids
        else sa.false()
    )
    rows = (
        await conn.execute(
            sa.select(operator_actions)
            .where(sa.or_(sa.and_(a.target_kind == "run", a.target_id == run_ref), on_letters))
            .order_by(a.at, a.id)
        )
    ).all()
    seen = {(r.action, r.target_id) for r in rows if r.target_kind == "dead_letter"}
    return [
        r
        for r in rows
        if not (
            r.target_kind == "run"
            and isinstance(r.params, dict)
            and (r.action, str(r.params.get("dead_letter"))) in seen
        )
    ]


async def actions_on(conn: AsyncConnection, kind: str, target_id: str) -> list[Any]:
    """Operator actions taken on one thing, oldest first."""
    a = operator_actions.c
    return list(
        (
            await conn.execute(
                sa.select(operator_actions)
                .where(a.target_kind == kind, a.target_id == target_id)
                .order_by(a.at, a.id)
            )
        ).all()
    )
