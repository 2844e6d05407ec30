"""Fleet queues: limits a named queue keeps across every worker process, and run priorities.

``fleet_queue("emails", concurrency=5, rate_limit=100, per=60)`` declares that at most 5 runs of
queue ``emails`` execute at once in the whole fleet, and at most 100 runs start per 60 seconds
(a token bucket: up to ``rate_limit`` at once after a quiet spell, then ``rate_limit / per`` a
second). Declare it in the module every worker imports, with the same limits everywhere.

The limits are enforced in the claim: a worker that found due runs of a fleet queue locks the
queue's row in ``convergent_queues`` (so claimers of that queue take turns, on PostgreSQL and
SQLite alike), counts the runs of the queue held by any worker, takes only what the limits leave
and draws one token per run it starts (a run resumed after a sleep or a wait draws none). Runs of
a fleet queue are claimed highest ``priority`` first (`convergent.workflows.enqueue`), then
oldest due first; they are
never taken at submit time by a worker of the submitting process (the fast path), so every start
goes through the limits. "At once" counts runs held by a worker: a run that sleeps or waits for an
event or a child holds no slot.

Queues not declared here keep the per-worker limits of ``Worker(queues=...)`` only, and pay nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import ConfigurationError
from convergent.store import store_of
from convergent.store.schema import queues, runs
from convergent.workflows._statements import ACTIVE

__all__ = ["QUEUES", "FleetQueue", "fleet_queue", "gate_of"]


@dataclass(frozen=True)
class FleetQueue:
    """A declared fleet queue (see `fleet_queue`)."""

    name: str
    concurrency: int | None
    rate_limit: int | None
    per: float

    async def admit(self, conn: AsyncConnection, now: datetime, rows: list[Any]) -> list[Any]:
        """Of the due ``rows`` a worker locked (in claim order), those the limits let it take
        now. Locks the queue's row first, so claimers of this queue take turns and each counts
        the runs the others took; draws one token per new run."""
        store = store_of(conn)
        q = queues.c
        locked = store.sql.lock_row(sa.select(q.tokens, q.refilled_at).where(q.name == self.name))
        state = (await conn.execute(locked)).first()
        if state is None:  # the first claim of this queue anywhere creates its row
            ins = store.sql.insert(queues).values(
                name=self.name,
                concurrency=self.concurrency,
                rate_limit=self.rate_limit,
                rate_period=self.per,
                tokens=float(self.rate_limit or 0),
                refilled_at=now,
                updated_at=now,
            )
            await conn.execute(ins.on_conflict_do_nothing(index_elements=["name"]))
            state = (await conn.execute(locked)).one()
        if self.concurrency is not None:
            r = runs.c
            held = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(r.queue == self.name, r.lease_owner.is_not(None), r.status.in_(ACTIVE))
            )
            rows = rows[: max(self.concurrency - int(held or 0), 0)]
        if self.rate_limit is None or not rows:
            return rows
        tokens = self.tokens_now(state.tokens, state.refilled_at, now)
        taken = []
        for each in rows:
            if each.status != "pending":  # a run resuming after a sleep or wait started already
                taken.append(each)
            elif tokens >= 1.0:
                tokens -= 1.0
                taken.append(each)
        await conn.execute(
            sa.update(queues)
            .where(q.name == self.name)
            .values(tokens=tokens, refilled_at=now, updated_at=now)
        )
        return taken

    def tokens_now(self, tokens: float, refilled_at: datetime | None, now: datetime) -> float:
        assert self.rate_limit is not None
        if refilled_at is None:
            return float(self.rate_limit)
        gained = max((now - refilled_at).total_seconds(), 0.0) * self.rate_limit / self.per
        return min(float(self.rate_limit), tokens + gained)


#: every fleet queue declared in this process, by name
QUEUES: dict[str, FleetQueue] = {}


def fleet_queue(
    name: str,
    *,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    per: float = 1.0,
) -> FleetQueue:
    """Declare limits for queue ``name`` that hold across every worker process."""
    if concurrency is None and rate_limit is None:
        raise ConfigurationError(
            f"fleet queue {name!r}: give concurrency=N and/or rate_limit=N (per=SECONDS)"
        )
    if concurrency is not None and concurrency < 1:
        raise ConfigurationError(f"fleet queue {name!r}: concurrency must be at least 1")
    if rate_limit is not None and (rate_limit < 1 or per <= 0):
        raise ConfigurationError(
            f"fleet queue {name!r}: rate_limit must be at least 1 and per a positive number "
            "of seconds"
        )
    found = FleetQueue(name, concurrency, rate_limit, per)
    QUEUES[name] = found
    return found


def gate_of(queue: str) -> FleetQueue | None:
    """The fleet limits of ``queue``, None for a queue limited per worker only."""
    return QUEUES.get(queue) if QUEUES else None
