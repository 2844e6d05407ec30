"""The Schedules page: declared schedules (``convergent.workflows.schedules``) and fleet queues
(``convergent_queues``: their limits and the runs each has running or waiting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store.schema import queues, runs

__all__ = ["QueueLoad", "fleet_queues"]


@dataclass(frozen=True)
class QueueLoad:
    queue: Any  # the convergent_queues row: name, concurrency, rate_limit, rate_period, tokens
    running: int
    pending: int


async def fleet_queues(conn: AsyncConnection) -> list[QueueLoad]:
    """Each fleet queue a worker has claimed from, with its running and pending runs (counted
    per queue through the (status, id) index: a few rows each, whatever the runs table holds)."""
    rows = (await conn.execute(sa.select(queues).order_by(queues.c.name))).all()
    out = []
    for q in rows:
        result = await conn.execute(
            sa.select(runs.c.status, sa.func.count())
            .where(runs.c.queue == q.name, runs.c.status.in_(("running", "pending")))
            .group_by(runs.c.status)
        )
        counts = {str(status): int(n) for status, n in result.all()}
        out.append(QueueLoad(q, counts.get("running", 0), counts.get("pending", 0)))
    return out
