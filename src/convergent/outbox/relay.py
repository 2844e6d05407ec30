"""The relay: publishes committed outbox rows through a transport, in order per key.

Keys hash into ``RELAY_PARTITIONS`` partitions; each partition is leased to one relay at a time
(see ``leases``), and a relay reads *all* unpublished rows of its partitions in id order, so a
row that committed late is picked up on the next pass instead of being skipped. Rows are deleted
only after the transport acked them, and only while the lease token is still ours.

A failing message blocks its own key (later rows of that key wait), never other keys. After
``retry.max_attempts`` it moves to ``convergent_dead_letters`` (source ``outbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate
from opentelemetry.trace import Span, set_span_in_context
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import metrics, tracing
from convergent.errors import NotSent, TransportError
from convergent.faults import fault_point, register
from convergent.ids import uuid7
from convergent.messages import Message
from convergent.outages import Outage, is_transient
from convergent.outbox.emit import OUTBOX_CHANNEL, RELAY_PARTITIONS
from convergent.outbox.leases import PartitionLeases, tokens_still_held
from convergent.retry import RetryPolicy
from convergent.store import Store, direct
from convergent.store.schema import dead_letters, outbox
from convergent.transports.base import Transport

__all__ = ["Relay"]

log = logging.getLogger(__name__)

AFTER_PUBLISH = register(
    "relay.after_publish_before_mark",
    "published to the broker, outbox rows not yet deleted: the next relay publishes again",
)
AFTER_CLAIM = register(
    "relay.after_claim_before_publish", "rows read under a lease, nothing published yet"
)
LEASE_GROUP = "relay"
DEFAULT_RETRY = RetryPolicy(max_attempts=10, initial_delay=0.5, max_delay=300.0)


class Relay:
    """One relay process (or task). ``await relay.run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        *,
        batch_size: int = 1000,
        lease_seconds: float = 15.0,
        poll_interval: float = 1.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        holder: str | None = None,
        lanes: int | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry = retry
        self.leases = PartitionLeases(
            LEASE_GROUP, RELAY_PARTITIONS, holder or secrets.token_hex(6), lease_seconds
        )
        # the embedded log in this very database: read, append and delete in one transaction
        self._in_store = transport.appends_in(store.url)
        if lanes is None:
            # a second lane overlaps one lane's reads with the other's publishing; publishing
            # into a database that takes one writer at a time, it only polls twice per wake-up
            lanes = 1 if self._in_store and store.sql.single_writer else 2
        self.lanes = max(1, lanes)
        self.published = 0
        self._refreshed_at: datetime | None = None
        self.database_outage = Outage("database", log)
        self.broker_outage = Outage("broker", log)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; wakes on outbox commits, polls as a fallback.

        A broker that is down is not fatal: ``publish`` reports it and the rows are retried."""
        try:
            async with self.store.notifier.subscribe(OUTBOX_CHANNEL) as wake:
                while not stop.is_set():
                    try:
                        count = await self.run_once()
                        self.database_outage.up()
                    except Exception as exc:
                        if is_transient(exc):
                            self.database_outage.down(exc)
                        else:  # a bug: with its traceback
                            log.exception("relay pass failed; retrying")
                        count = 0
                    if count >= self.batch_size:
                        continue  # more waiting: no sleep
                    stopped = asyncio.ensure_future(stop.wait())
                    woken = asyncio.ensure_future(wake.wait(self.poll_interval))
                    await asyncio.wait({stopped, woken}, return_when=asyncio.FIRST_COMPLETED)
                    for task in (stopped, woken):
                        task.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.release()

    async def release(self) -> None:
        """Give up this relay's partitions so other relays take them at once."""
        async with self.store.begin() as conn:
            await self.leases.release_all(conn)
        self._refreshed_at = None

    async def run_once(self) -> int:
        """One pass: refresh leases when due, then publish batches of due rows while they come
        back full (until the leases are ``ttl / 3`` old), settling each. Returns the number of
        rows settled (published or given up)."""
        now = self.store.clock.now()
        held = self.leases.held
        if self._refreshed_at is None or now - self._refreshed_at >= self.leases.ttl / 3:
            async with self.store.begin() as conn:  # renew well before the lease runs out
                held = await self.leases.refresh(conn, now)
            self._refreshed_at = now
        if not held:
            return 0
        # lanes own disjoint partitions (so each key stays in one lane, in order)
        parts = sorted(held)
        lanes = [parts[i :: self.lanes] for i in range(self.lanes) if parts[i :: self.lanes]]
        # no new batch once the leases are ttl/3 old: a batch in flight then still has 2/3 left
        assert self._refreshed_at is not None
        age = max(0.0, (now - self._refreshed_at).total_seconds())
        until = asyncio.get_running_loop().time() + self.leases.ttl.total_seconds() / 3 - age
        settled = 0
        if len(lanes) > 1:
            # most wake-ups find a few rows: one read over every partition, not one per lane;
            # the lanes start when that batch comes back full (a backlog)
            settled, more = await self._stream(held, until, once=True)
            if not more:
                return settled
        counts = await asyncio.gather(
            *(self._stream({p: held[p] for p in lane}, until) for lane in lanes)
        )
        return settled + sum(count for count, _ in counts)

    async def _stream(
        self, held: dict[int, str], until: float, once: bool = False
    ) -> tuple[int, bool]:
        """One lane: fetch, publish, settle, and again while batches come back full (until the
        loop time ``until``, then leases are renewed), or ``once``. Lanes run
        independently, so one lane's database round trips overlap another's broker acks;
        within a lane a batch is settled before the next is read, so a key never overtakes its
        own failed message. Returns the rows settled, and whether more may be due now."""
        if self._in_store:
            return await self._stream_in_store(held, until, once)
        partitions = sorted(held)
        loop = asyncio.get_running_loop()
        settled = 0
        while True:
            async with self.store.statement() as conn:
                rows = await self._due(conn, partitions)
            if not rows:
                return settled, False
            fault_point(AFTER_CLAIM)
            messages = [Message.from_envelope(r.topic, r.key, r.envelope) for r in rows]
            spans = self._publish_spans(messages) if tracing.enabled() else None
            results = await self.transport.publish(messages)
            if spans is not None:
                _end_spans(spans, results)
            self._note_broker(results)
            fault_point(AFTER_PUBLISH)
            mine = await self._settle(rows, results, held)
            settled += sum(not isinstance(e, NotSent) for e in results)
            if mine != set(partitions):
                self._refreshed_at = None  # a lease was taken over: refresh before going on
                return settled, False
            if len(rows) < self.batch_size or loop.time() >= until:
                return settled, False
            if once:
                return settled, True

    async def _stream_in_store(
        self, held: dict[int, str], until: float, once: bool = False
    ) -> tuple[int, bool]:
        """One lane, when the log lives in the outbox's own database: check the leases, read the
        due rows, append them to the log and delete them in ONE transaction (one instead of
        three, and never a row published twice)."""
        partitions = sorted(held)
        loop = asyncio.get_running_loop()
        settled = 0
        while True:
            spans: list[Span | None] | None = None
            try:
                async with self.store.begin() as conn:
                    mine = await tokens_still_held(conn, LEASE_GROUP, held, self.leases.holder)
                    if mine != set(partitions):
                        self._refreshed_at = None  # taken over: refresh before going on
                        return settled, False
                    rows = await self._due(conn, partitions)
                    if not rows:
                        return settled, False
                    fault_point(AFTER_CLAIM)
                    messages = [Message.from_envelope(r.topic, r.key, r.envelope) for r in rows]
                    spans = self._publish_spans(messages) if tracing.enabled() else None
                    await self.transport.append_in(conn, messages)
                    fault_point(AFTER_PUBLISH)  # a crash here rolls the append back too
                    await direct.execute(
                        conn, self._delete_acked(), {"b_ids": [r.id for r in rows]}
                    )
            except BaseException as exc:
                if spans is not None:
                    _end_spans(spans, [exc] * len(spans))
                raise
            if spans is not None:
                _end_spans(spans, [None] * len(spans))
            self.published += len(rows)
            _count_published(rows)
            settled += len(rows)
            if len(rows) < self.batch_size or loop.time() >= until:
                return settled, False
            if once:
                return settled, True

    async def _due(self, conn: AsyncConnection, partitions: list[int]) -> list[Any]:
        """The rows of ``partitions`` to publish now, in order, a retried key's first only."""
        query = _due_rows(tuple(partitions), self.batch_size)
        due = await direct.execute(conn, query, {"now": self.store.clock.now()})
        return _hold_back_behind_retries(due.all())

    def _delete_acked(self) -> Any:
        sql = self.store.sql
        return sql.once(
            "relay.delete_acked",
            lambda: sa.delete(outbox).where(sql.among_param(outbox.c.id, "b_ids")),
        )

    def _publish_spans(self, messages: list[Message]) -> list[Span | None]:
        """A ``publish`` span per traced message, continuing its producer's trace; the message
        carries the publish span on (consumers continue from it)."""
        system = type(self.transport).__name__.removesuffix("Transport").lower() or "convergent"
        spans: list[Span | None] = []
        for m in messages:
            parent = tracing.parent_from(m.headers)
            if parent is None:
                spans.append(None)
                continue
            span = tracing.tracer.start_span(
                f"publish {m.topic}",
                context=parent,
                kind=tracing.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": system,
                    "messaging.operation.type": "send",
                    "messaging.destination.name": m.topic,
                    "messaging.message.id": m.id,
                    "messaging.message.conversation_id": m.key,
                },
            )
            propagate.inject(m.headers, context=set_span_in_context(span))
            spans.append(span)
        return spans

    def _note_broker(self, results: list[BaseException | None]) -> None:
        """Every message refused as unreachable: the broker is down (one line, not one per
        message); any acked: it is up."""
        if any(e is None for e in results):
            self.broker_outage.up()
        elif results and all(isinstance(e, TransportError) for e in results):
            self.broker_outage.down(next(e for e in results if e is not None))

    async def _settle(
        self, rows: Sequence[Any], results: list[BaseException | None], held: dict[int, str]
    ) -> set[int]:
        """Delete what was acked, record failures; only for partitions still ours. Returns
        those partitions."""
        if self.store.sql.one_statement_writes and all(
            e is None or isinstance(e, NotSent) for e in results
        ):
            return await self._settle_acked(rows, results, held)
        now = self.store.clock.now()
        async with self.store.begin() as conn:
            mine = await tokens_still_held(conn, LEASE_GROUP, held, self.leases.holder)
            outcomes = [(r, e) for r, e in zip(rows, results, strict=True) if r.partition in mine]
            acked = [r.id for r, err in outcomes if err is None]
            if acked:
                await direct.execute(conn, self._delete_acked(), {"b_ids": acked})
            self.published += len(acked)
            _count_published(r for r, err in outcomes if err is None)
            for row, err in outcomes:
                if err is None or isinstance(err, NotSent):  # not sent: not an attempt
                    continue
                attempt = row.attempts + 1
                # the deadline counts from the message's creation (read only on failure: the
                # hot path selects no timestamps)
                first = await conn.scalar(
                    sa.select(outbox.c.created_at).where(outbox.c.id == row.id)
                )
                when = self.retry.next_attempt_at(attempt, now, first_attempt_at=first)
                reason = f"{type(err).__name__}: {err}"
                if when is None:
                    await _dead_letter(conn, row, attempt, reason, now)
                    metrics.DEAD_LETTERED.labels("outbox").inc()
                else:
                    metrics.RETRIES.labels("outbox").inc()
                    await conn.execute(
                        sa.update(outbox)
                        .where(outbox.c.id == row.id)
                        .values(attempts=attempt, next_attempt_at=when, last_error=reason)
                    )
        return mine

    async def _settle_acked(
        self, rows: Sequence[Any], results: list[BaseException | None], held: dict[int, str]
    ) -> set[int]:
        """Nothing failed: the lease check and the delete are one autocommit statement, one
        round trip instead of four (BEGIN, lock, delete, COMMIT)."""
        parts = sorted(held)
        stmt, params = self.store.sql.delete_under_leases(
            names=[self.leases.name(p) for p in parts],
            tokens=[held[p] for p in parts],
            parts=parts,
            holder=self.leases.holder,
            ids=[r.id for r, e in zip(rows, results, strict=True) if e is None],
        )
        async with self.store.statement(write=True) as conn:
            mine = set((await direct.execute(conn, stmt, params)).scalars())
        sent = [r for r, e in zip(rows, results, strict=True) if e is None and r.partition in mine]
        self.published += len(sent)
        _count_published(sent)
        return mine


def _end_spans(spans: list[Span | None], results: list[BaseException | None]) -> None:
    for span, err in zip(spans, results, strict=True):
        if span is None:
            continue
        if err is not None:
            tracing.record_error(span, err)
        span.end()


def _count_published(rows: Iterable[Any]) -> None:
    by_topic = Counter(r.topic for r in rows)
    for topic, n in by_topic.items():
        metrics.PUBLISHED.labels(topic).inc(n)


@functools.lru_cache(maxsize=64)
def _due_rows(partitions: tuple[int, ...], limit: int) -> sa.Select[Any]:
    """The due rows of ``partitions`` as of the ``now`` parameter. Built once per lane's
    partitions (it runs on every wake-up; building and keying it costs more than running it)."""
    now = sa.bindparam("now", type_=outbox.c.next_attempt_at.type)
    blocked = outbox.alias("blocked")
    later_than_a_waiting_row = (
        sa.select(blocked.c.id)
        .where(
            blocked.c.next_attempt_at > now,
            blocked.c.topic == outbox.c.topic,
            blocked.c.key == outbox.c.key,
            blocked.c.id < outbox.c.id,
        )
        .exists()
    )
    return (
        # only what publishing and settling need (no timestamps to convert per row)
        sa.select(
            outbox.c.id,
            outbox.c.topic,
            outbox.c.key,
            outbox.c.partition,
            outbox.c.attempts,
            outbox.c.envelope,
        )
        .where(
            outbox.c.partition.in_(partitions),
            sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
            ~later_than_a_waiting_row,
        )
        .order_by(outbox.c.id)
        .limit(limit)
    )


def _hold_back_behind_retries(rows: Sequence[Any]) -> list[Any]:
    """A key whose oldest row is being retried sends only that row until it goes through."""
    retrying: set[tuple[str, str]] = set()
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        key = (row.topic, row.key)
        if key in retrying:
            continue
        if key not in seen and row.attempts > 0:
            retrying.add(key)
        seen.add(key)
        kept.append(row)
    return kept


async def _dead_letter(
    conn: AsyncConnection, row: Any, attempts: int, reason: str, now: datetime
) -> None:
    await conn.execute(
        sa.insert(dead_letters).values(
            id=uuid7(),
            source="outbox",
            source_ref=str(row.id),
            name=row.topic,
            key=row.key,
            payload={"topic": row.topic, "key": row.key, "envelope": row.envelope},
            reason=reason,
            attempts=attempts,
            created_at=now,
        )
    )
    await conn.execute(sa.delete(outbox).where(outbox.c.id == row.id))
