"""The Overview page: backlogs, lag, dead letters, runs by state, throughput and time to
consistency over a recent window.

Counting every run ever made would read the whole table, so active states (few rows, on the
``(status, id)`` index) are counted exactly and final states over the window only, which is a
primary-key range because run ids are UUIDv7.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.console.queries.paging import id_floor
from convergent.store.schema import (
    dead_letters,
    idempotency_keys,
    log_heads,
    log_offsets,
    outbox,
    runs,
    webhook_deliveries,
)

__all__ = ["ACTIVE_STATES", "Bucket", "Overview", "overview"]

ACTIVE_STATES = ("pending", "running", "compensating")
_FINAL = ("completed", "failed", "cancelled")
_SAMPLE = 100  # completed runs per slice whose durations make the percentiles


@dataclass(frozen=True)
class Bucket:
    """One slice of the window: runs started in it, how many of those completed, and how long
    they took (percentiles of the newest completed ones, up to a sample size)."""

    start: datetime
    started: int
    completed: int
    p50_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class Overview:
    window: timedelta
    runs_active: dict[str, int]
    runs_final: dict[str, int]  # within the window
    outbox_backlog: list[Any]  # topic, count, oldest
    consumer_lag: list[Any]  # group, topic, lag
    dead_letters: dict[str, int]
    webhooks_pending: int
    keys_in_flight: int
    buckets: list[Bucket]


async def overview(
    conn: AsyncConnection,
    *,
    now: datetime,
    window: timedelta = timedelta(hours=1),
    slices: int = 30,
) -> Overview:
    r = runs.c
    active: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(r.status, sa.func.count())
                .where(r.status.in_(ACTIVE_STATES))
                .group_by(r.status)
            )
        ).all()
    )
    start, width = now - window, window / slices
    counts = await _window_counts(conn, start, width, slices)
    final = {state: sum(n for (_, s), n in counts.items() if s == state) for state in _FINAL}
    backlog = (
        await conn.execute(
            sa.select(
                outbox.c.topic,
                sa.func.count().label("count"),
                sa.func.min(outbox.c.created_at).label("oldest"),
            )
            .group_by(outbox.c.topic)
            .order_by(outbox.c.topic)
        )
    ).all()
    h, o = log_heads.c, log_offsets.c
    lag = (
        await conn.execute(
            sa.select(
                o.consumer_group,
                o.topic,
                sa.func.sum(h.next_position - o.position).label("lag"),
            )
            .join(log_heads, sa.and_(h.topic == o.topic, h.partition == o.partition))
            .group_by(o.consumer_group, o.topic)
            .order_by(o.consumer_group, o.topic)
        )
    ).all()
    dead: dict[str, int] = dict(
        (
            await conn.execute(
                sa.select(dead_letters.c.source, sa.func.count())
                .where(dead_letters.c.status == "dead")
                .group_by(dead_letters.c.source)
            )
        ).all()
    )
    pending = await conn.scalar(
        sa.select(sa.func.count()).where(webhook_deliveries.c.status == "pending")
    )
    in_flight = await conn.scalar(
        sa.select(sa.func.count()).where(idempotency_keys.c.status == "in_progress")
    )
    return Overview(
        window=window,
        runs_active={s: int(active.get(s, 0)) for s in ACTIVE_STATES},
        runs_final={s: final.get(s, 0) for s in _FINAL},
        outbox_backlog=list(backlog),
        consumer_lag=list(lag),
        dead_letters={str(k): int(v) for k, v in dead.items()},
        webhooks_pending=int(pending or 0),
        keys_in_flight=int(in_flight or 0),
        buckets=await _buckets(conn, counts, start, width, slices),
    )


async def _window_counts(
    conn: AsyncConnection, start: datetime, width: timedelta, slices: int
) -> dict[tuple[int, str], int]:
    """Runs per (slice, state) in ONE statement: the slice is a CASE over id bounds, so the scan
    is a primary-key range and the grouping is the same SQL on both databases."""
    r = runs.c
    bounds = [id_floor(start + width * (i + 1)) for i in range(slices)]
    which = sa.case(*((r.id < b, i) for i, b in enumerate(bounds)), else_=slices)
    rows = await conn.execute(
        sa.select(which.label("slice"), r.status, sa.func.count())
        .where(r.id >= id_floor(start))
        .group_by(which, r.status)
    )
    return {(int(i), str(status)): int(n) for i, status, n in rows if i < slices}


async def _buckets(
    conn: AsyncConnection,
    counts: dict[tuple[int, str], int],
    start: datetime,
    width: timedelta,
    slices: int,
) -> list[Bucket]:
    """Per slice of the window (by start time): runs started, how many of those completed, and
    the time to consistency of the newest completed ones: a sample per slice on the (status, id)
    index, all slices in one statement."""
    r = runs.c
    samples = [
        sa.select(sa.literal(i).label("slice"), r.created_at, r.updated_at)
        .where(
            r.status == "completed",
            r.id >= id_floor(start + width * i),
            r.id < id_floor(start + width * (i + 1)),
        )
        .order_by(r.id.desc())
        .limit(_SAMPLE)
        .subquery()
        for i in range(slices)
        if counts.get((i, "completed"))
    ]
    durations: dict[int, list[float]] = {}
    if samples:
        union = sa.union_all(*(sa.select(*q.c) for q in samples))
        for row in await conn.execute(union):
            durations.setdefault(int(row.slice), []).append(
                (row.updated_at - row.created_at).total_seconds()
            )
    out = []
    for i in range(slices):
        ds = sorted(durations.get(i, []))
        out.append(
            Bucket(
                start=start + width * i,
                started=sum(n for (j, _), n in counts.items() if j == i),
                completed=counts.get((i, "completed"), 0),
                p50_seconds=ds[len(ds) // 2] if ds else None,
                p95_seconds=ds[min(len(ds) - 1, int(len(ds) * 0.95))] if ds else None,
            )
        )
    return out
