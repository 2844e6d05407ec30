"""Retention and compaction: what nothing else cleans up, purged in small batches.

One round (``purge``) deletes, each in batches of ``maintenance_batch_size`` rows with one short
transaction per batch (never a long hold on the SQLite writer or a PostgreSQL lock):

* idempotency keys past their expiry, and locks of requests that died;
* inbox records older than ``inbox_retention`` and replies older than ``reply_retention``;
* finished workflow runs older than ``run_retention``, with their checkpoints and events;
* finished webhook deliveries older than ``webhook_retention``, with their attempts, then the
  messages left without deliveries, and webhook events;
* embedded-log entries of event topics older than ``log_retention`` (``log_retention_topics``
  per topic); entity topics are compacted instead: an entry superseded by a later one of its key
  goes after ``compaction_lag``, a tombstone left as the latest entry after
  ``tombstone_retention``.

``Maintenance`` runs a round every ``maintenance_interval`` seconds (one of the standard loops);
``convergent purge`` runs one now, ``--dry-run`` counts instead. Topic kinds come from the
declarations the process imported: the log of a topic it does not know is left alone (unless
named in ``log_retention_topics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from convergent import settings
from convergent.errors import ConfigurationError
from convergent.outages import describe, is_transient
from convergent.store import Store
from convergent.store.schema import (
    idempotency_keys,
    inbox,
    log_entries,
    replies,
    run_events,
    run_steps,
    runs,
    webhook_attempts,
    webhook_deliveries,
    webhook_events,
    webhook_messages,
)
from convergent.topics import TOPICS, TopicKind

__all__ = ["Maintenance", "Retention", "purge"]

log = logging.getLogger(__name__)

_FINAL_RUNS = ("completed", "failed", "cancelled")
_FINAL_DELIVERIES = ("succeeded", "failed")


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept, in seconds (defaults: the settings)."""

    inbox: float
    replies: float
    runs: float
    webhooks: float
    log: float
    log_topics: dict[str, float] = field(default_factory=dict)
    compaction_lag: float = 60.0
    tombstones: float = 86400.0
    batch_size: int = 500

    @classmethod
    def from_settings(cls) -> Retention:
        s = settings.load()
        topics: dict[str, float] = {}
        for item in s.log_retention_topics:
            name, _, seconds = item.rpartition("=")
            try:
                topics[name] = float(seconds)
            except ValueError:
                name = ""
            if not name:
                raise ConfigurationError(
                    f"bad CONVERGENT_LOG_RETENTION_TOPICS item {item!r}: use topic=seconds"
                )
        return cls(
            inbox=s.inbox_retention,
            replies=s.reply_retention,
            runs=s.run_retention,
            webhooks=s.webhook_retention,
            log=s.log_retention,
            log_topics=topics,
            compaction_lag=s.compaction_lag,
            tombstones=s.tombstone_retention,
            batch_size=s.maintenance_batch_size,
        )


async def purge(
    store: Store, *, dry_run: bool = False, retention: Retention | None = None
) -> dict[str, int]:
    """One round: what went (or, with ``dry_run``, would go), per kind of row."""
    r = retention or Retention.from_settings()
    now = store.clock.now()
    out: dict[str, int] = {}
    for name, table, keys, where in _tasks(r, now):
        out[name] = await _delete(store, table, keys, where, r.batch_size, dry_run)
    for topic in sorted(t.name for t in TOPICS.values() if t.kind is TopicKind.ENTITY):
        superseded = await _delete(
            store,
            log_entries,
            _LOG_KEY,
            (log_entries.c.topic == topic)
            & (log_entries.c.appended_at < now - timedelta(seconds=r.compaction_lag))
            & _superseded(),
            r.batch_size,
            dry_run,
        )
        out["log entries compacted"] = out.get("log entries compacted", 0) + superseded
        gone = await _tombstones(store, topic, now - timedelta(seconds=r.tombstones), r, dry_run)
        out["log tombstones"] = out.get("log tombstones", 0) + gone
    return out


_LOG_KEY = (log_entries.c.topic, log_entries.c.partition, log_entries.c.position)


def _superseded() -> Any:
    newer = log_entries.alias("newer")
    return (
        sa.select(newer.c.position)
        .where(
            newer.c.topic == log_entries.c.topic,
            newer.c.partition == log_entries.c.partition,
            newer.c.key == log_entries.c.key,
            newer.c.position > log_entries.c.position,
        )
        .exists()
    )


def _tasks(r: Retention, now: datetime) -> list[tuple[str, sa.Table, Sequence[Any], Any]]:
    def before(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    keys = idempotency_keys.c
    finished_runs = sa.select(runs.c.id).where(
        runs.c.status.in_(_FINAL_RUNS), runs.c.updated_at < before(r.runs)
    )
    finished_deliveries = sa.select(webhook_deliveries.c.id).where(
        webhook_deliveries.c.status.in_(_FINAL_DELIVERIES),
        webhook_deliveries.c.updated_at < before(r.webhooks),
    )
    entity = {t.name for t in TOPICS.values() if t.kind is TopicKind.ENTITY}
    events = {t.name for t in TOPICS.values() if t.kind is not TopicKind.ENTITY}
    tasks: list[tuple[str, sa.Table, Sequence[Any], Any]] = [
        (
            "idempotency keys",
            idempotency_keys,
            (keys.scope, keys.key),
            sa.or_(
                sa.and_(keys.status == "completed", keys.expires_at <= now),
                sa.and_(keys.status == "in_progress", keys.locked_until <= now),
            ),
        ),
        (
            "inbox records",
            inbox,
            (inbox.c.consumer, inbox.c.message_id),
            inbox.c.received_at < before(r.inbox),
        ),
        (
            "replies",
            replies,
            (replies.c.correlation_id,),
            replies.c.received_at < before(r.replies),
        ),
        # children first: a round cut short leaves finished runs, never orphans
        (
            "run checkpoints",
            run_steps,
            (run_steps.c.run_id, run_steps.c.seq),
            run_steps.c.run_id.in_(finished_runs.scalar_subquery()),
        ),
        (
            "run events",
            run_events,
            (run_events.c.id,),
            run_events.c.run_id.in_(finished_runs.scalar_subquery()),
        ),
        (
            "finished runs",
            runs,
            (runs.c.id,),
            runs.c.status.in_(_FINAL_RUNS) & (runs.c.updated_at < before(r.runs)),
        ),
        (
            "webhook attempts",
            webhook_attempts,
            (webhook_attempts.c.id,),
            webhook_attempts.c.delivery_id.in_(finished_deliveries.scalar_subquery()),
        ),
        (
            "webhook deliveries",
            webhook_deliveries,
            (webhook_deliveries.c.id,),
            webhook_deliveries.c.status.in_(_FINAL_DELIVERIES)
            & (webhook_deliveries.c.updated_at < before(r.webhooks)),
        ),
        (
            "webhook messages",
            webhook_messages,
            (webhook_messages.c.id,),
            (webhook_messages.c.created_at < before(r.webhooks))
            & ~sa.select(webhook_deliveries.c.id)
            .where(webhook_deliveries.c.message_id == webhook_messages.c.id)
            .exists(),
        ),
        (
            "webhook events",
            webhook_events,
            (webhook_events.c.id,),
            webhook_events.c.created_at < before(r.webhooks),
        ),
        (
            "log entries",
            log_entries,
            _LOG_KEY,
            # only topics this process knows to be event topics: an entity topic declared
            # elsewhere must not lose its latest states to a time limit
            (log_entries.c.appended_at < before(r.log))
            & log_entries.c.topic.in_(sorted(events - set(r.log_topics))),
        ),
    ]
    for topic, seconds in sorted(r.log_topics.items()):
        if topic not in entity:
            tasks.append(
                (
                    "log entries",
                    log_entries,
                    _LOG_KEY,
                    (log_entries.c.topic == topic) & (log_entries.c.appended_at < before(seconds)),
                )
            )
    return _merged(tasks)


def _merged(
    tasks: list[tuple[str, sa.Table, Sequence[Any], Any]],
) -> list[tuple[str, sa.Table, Sequence[Any], Any]]:
    """Same-named tasks (per-topic log retention) become one with their conditions or'ed."""
    out: dict[str, tuple[str, sa.Table, Sequence[Any], Any]] = {}
    for name, table, keys, where in tasks:
        if name in out:
            where = sa.or_(out[name][3], where)
        out[name] = (name, table, keys, where)
    return list(out.values())


async def _delete(
    store: Store, table: sa.Table, keys: Sequence[Any], where: Any, batch: int, dry_run: bool
) -> int:
    if dry_run:
        async with store.read() as conn:
            count = sa.select(sa.func.count()).select_from(table).where(where)
            return int(await conn.scalar(count) or 0)
    # the batch is picked in a subquery of its own (not correlated with the DELETE)
    pick = sa.select(*keys).where(where).limit(batch).correlate(None)
    if len(keys) == 1:
        stmt = sa.delete(table).where(keys[0].in_(pick.scalar_subquery()))
    else:
        stmt = sa.delete(table).where(sa.tuple_(*keys).in_(pick))
    total = 0
    while True:
        async with store.begin() as conn:
            deleted = int((await conn.execute(stmt)).rowcount)
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)  # let the process's other work in between batches


async def _tombstones(
    store: Store, topic: str, older_than: datetime, r: Retention, dry_run: bool
) -> int:
    """Delete tombstones that are the latest entry of their key and older than the grace."""
    total = 0
    after = (-1, -1)
    while True:
        async with store.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        log_entries.c.partition, log_entries.c.position, log_entries.c.envelope
                    )
                    .where(
                        log_entries.c.topic == topic,
                        log_entries.c.appended_at < older_than,
                        sa.tuple_(log_entries.c.partition, log_entries.c.position) > after,
                        ~_superseded(),
                    )
                    .order_by(log_entries.c.partition, log_entries.c.position)
                    .limit(r.batch_size)
                )
            ).all()
        if not rows:
            return total
        after = (rows[-1].partition, rows[-1].position)
        dead = [(row.partition, row.position) for row in rows if row.envelope.get("data") is None]
        total += len(dead)
        if dead and not dry_run:
            async with store.begin() as conn:
                await conn.execute(
                    sa.delete(log_entries).where(
                        log_entries.c.topic == topic,
                        sa.tuple_(log_entries.c.partition, log_entries.c.position).in_(dead),
                        ~_superseded(),  # still the latest: nothing newer arrived meanwhile
                    )
                )


@dataclass
class Maintenance:
    """Runs a ``purge`` round every ``interval`` seconds (default: the settings')."""

    store: Store
    interval: float | None = None
    retention: Retention | None = None
    rounds: int = 0
    purged: dict[str, int] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.interval or settings.load().maintenance_interval
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the next round tries again
                if is_transient(exc):  # the loops that need it more say the database is away
                    log.info("maintenance round skipped: %s", describe(exc))
                else:
                    log.exception("maintenance round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def run_once(self) -> dict[str, int]:
        done = await purge(self.store, retention=self.retention)
        self.rounds += 1
        for name, count in done.items():
            self.purged[name] = self.purged.get(name, 0) + count
        if any(done.values()):
            log.info("maintenance purged %s", {k: v for k, v in done.items() if v})
        return done
