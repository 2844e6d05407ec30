"""Gauges read from the database.

Counters and histograms live where things happen (idempotency replays and conflicts, step
retries, webhook attempts, consumer time-to-consistency, dead-lettered workflow work). Backlogs
and states are facts of the database, so a loop samples them every few seconds into gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from prometheus_client import Gauge

from convergent.outages import describe, is_transient
from convergent.store import Store
from convergent.store.schema import dead_letters, outbox, runs, webhook_deliveries

__all__ = ["StoreGauges"]

log = logging.getLogger(__name__)

OUTBOX_BACKLOG = Gauge("convergent_outbox_backlog", "Outbox messages not yet published")
OUTBOX_OLDEST = Gauge(
    "convergent_outbox_oldest_age_seconds", "Age of the oldest unpublished outbox message"
)
RUNS = Gauge("convergent_runs", "Workflow runs by status", ["status"])
DEAD_LETTERS = Gauge(
    "convergent_dead_letters", "Dead letters awaiting a person, by source", ["source"]
)
WEBHOOKS_PENDING = Gauge("convergent_webhook_deliveries_pending", "Webhook deliveries not yet done")
_RUN_STATES = ("pending", "running", "compensating", "completed", "failed", "cancelled")


@dataclass
class StoreGauges:
    """A loop that samples backlogs and states into gauges."""

    store: Store
    interval: float = 5.0

    async def sample(self) -> None:
        now = self.store.clock.now()
        async with self.store.read() as conn:
            backlog, oldest = (
                await conn.execute(sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)))
            ).one()
            counted = sa.select(runs.c.status, sa.func.count()).group_by(runs.c.status)
            by_status: dict[str, int] = {s: n for s, n in (await conn.execute(counted)).all()}
            dead = (
                await conn.execute(
                    sa.select(dead_letters.c.source, sa.func.count())
                    .where(dead_letters.c.status == "dead")
                    .group_by(dead_letters.c.source)
                )
            ).all()
            pending = (
                await conn.execute(
                    sa.select(sa.func.count()).where(webhook_deliveries.c.status == "pending")
                )
            ).scalar_one()
        OUTBOX_BACKLOG.set(backlog)
        OUTBOX_OLDEST.set(0.0 if oldest is None else (now - oldest).total_seconds())
        for status in _RUN_STATES:
            RUNS.labels(status=status).set(by_status.get(status, 0))
        for source, count in dead:
            DEAD_LETTERS.labels(source=source).set(count)
        WEBHOOKS_PENDING.set(pending)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sample()
            except Exception as exc:  # a missed sample is not worth stopping for
                if is_transient(exc):  # the loops that need it more say the database is away
                    log.info("metrics sample skipped: %s", describe(exc))
                else:
                    log.exception("sampling metrics failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
