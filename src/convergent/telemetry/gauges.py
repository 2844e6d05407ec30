"""Gauges read from the database.

Counters and histograms live where things happen (`convergent.metrics`). Backlogs and states are
facts of the database, so a loop samples them every few seconds and a collector hands the last
sample to Prometheus at scrape time (a series that went away, e.g. a topic drained, reads 0).
Every process that samples the same database shows the same values: aggregate with ``max``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from convergent.outages import describe, is_transient
from convergent.store import Store
from convergent.store.schema import (
    dead_letters,
    log_heads,
    log_offsets,
    outbox,
    runs,
    webhook_deliveries,
)

__all__ = ["Snapshot", "StoreGauges"]

log = logging.getLogger(__name__)

_RUN_STATES = ("pending", "running", "compensating", "completed", "failed", "cancelled")
_SOURCES = ("outbox", "consumer", "workflow", "webhook")


@dataclass
class Snapshot:
    """One sample of the database's backlogs and states."""

    backlog: dict[str, int] = field(default_factory=dict)  # topic -> unpublished rows
    oldest: dict[str, float] = field(default_factory=dict)  # topic -> seconds
    runs: dict[tuple[str, str], int] = field(default_factory=dict)  # (workflow, status) -> n
    dead: dict[str, int] = field(default_factory=dict)  # source -> letters awaiting a person
    lag: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic) -> messages
    webhooks_pending: int = 0


class _LastSample(Collector):
    """Serves the latest `Snapshot` of this process; topics and groups once seen stay (at 0)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.topics: set[str] = set()
        self.workflows: set[str] = set()
        self.groups: set[tuple[str, str]] = set()

    def update(self, snapshot: Snapshot) -> None:
        self.topics |= set(snapshot.backlog)
        self.workflows |= {w for w, _ in snapshot.runs}
        self.groups |= set(snapshot.lag)
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.snapshot
        if s is None:
            return
        backlog = GaugeMetricFamily(
            "convergent_outbox_backlog", "Outbox messages not yet published", labels=["topic"]
        )
        oldest = GaugeMetricFamily(
            "convergent_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox message",
            labels=["topic"],
        )
        for topic in sorted(self.topics):
            backlog.add_metric([topic], s.backlog.get(topic, 0))
            oldest.add_metric([topic], s.oldest.get(topic, 0.0))
        by_status = GaugeMetricFamily(
            "convergent_runs", "Workflow runs by status", labels=["status"]
        )
        by_workflow = GaugeMetricFamily(
            "convergent_workflow_runs",
            "Workflow runs by workflow and status",
            labels=["workflow", "status"],
        )
        for status in _RUN_STATES:
            by_status.add_metric([status], sum(n for (_, st), n in s.runs.items() if st == status))
            for workflow in sorted(self.workflows):
                by_workflow.add_metric([workflow, status], s.runs.get((workflow, status), 0))
        dead = GaugeMetricFamily(
            "convergent_dead_letters",
            "Dead letters awaiting a person, by source",
            labels=["source"],
        )
        for source in sorted(set(_SOURCES) | set(s.dead)):
            dead.add_metric([source], s.dead.get(source, 0))
        lag = GaugeMetricFamily(
            "convergent_consumer_lag",
            "Messages of the embedded log a consumer group has not handled yet",
            labels=["group", "topic"],
        )
        for group, topic in sorted(self.groups):
            lag.add_metric([group, topic], s.lag.get((group, topic), 0))
        pending = GaugeMetricFamily(
            "convergent_webhook_deliveries_pending", "Webhook deliveries not yet done"
        )
        pending.add_metric([], s.webhooks_pending)
        yield from (backlog, oldest, by_status, by_workflow, dead, lag, pending)


LAST_SAMPLE = _LastSample()
REGISTRY.register(LAST_SAMPLE)


@dataclass
class StoreGauges:
    """A loop that samples backlogs and states into gauges."""

    store: Store
    interval: float = 5.0

    async def sample(self) -> Snapshot:
        now = self.store.clock.now()
        s = Snapshot()
        async with self.store.read() as conn:
            for topic, count, first in await conn.execute(
                sa.select(
                    outbox.c.topic, sa.func.count(), sa.func.min(outbox.c.created_at)
                ).group_by(outbox.c.topic)
            ):
                s.backlog[topic] = count
                s.oldest[topic] = max(0.0, (now - first).total_seconds())
            counted = sa.select(runs.c.workflow, runs.c.status, sa.func.count()).group_by(
                runs.c.workflow, runs.c.status
            )
            s.runs = {(w, st): n for w, st, n in await conn.execute(counted)}
            s.dead = dict(
                (
                    await conn.execute(
                        sa.select(dead_letters.c.source, sa.func.count())
                        .where(dead_letters.c.status == "dead")
                        .group_by(dead_letters.c.source)
                    )
                ).all()
            )
            h, o = log_heads.c, log_offsets.c
            behind = (
                sa.select(o.consumer_group, o.topic, sa.func.sum(h.next_position - o.position))
                .join_from(
                    log_offsets, log_heads, (h.topic == o.topic) & (h.partition == o.partition)
                )
                .group_by(o.consumer_group, o.topic)
            )
            s.lag = {(g, t): int(n or 0) for g, t, n in await conn.execute(behind)}
            s.webhooks_pending = (
                await conn.execute(
                    sa.select(sa.func.count()).where(webhook_deliveries.c.status == "pending")
                )
            ).scalar_one()
        LAST_SAMPLE.update(s)
        return s

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
