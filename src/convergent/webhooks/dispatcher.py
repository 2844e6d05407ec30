"""The dispatcher: claims due deliveries, sends them, records attempts, schedules retries.

One loop owns the database writes (each round records the finished attempts and claims the next
deliveries in one transaction); the HTTP
sends run as tasks, at most ``per_endpoint_concurrency`` per endpoint, so a slow endpoint only
ever holds its own slots and never stalls the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from convergent.errors import MissingExtra

try:
    import httpx
except ImportError as exc:
    raise MissingExtra("http", "webhook delivery") from exc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import faults, tracing
from convergent import metrics as core_metrics
from convergent.faults import fault_point
from convergent.ids import uuid7
from convergent.outages import Outage, is_transient
from convergent.store import Store, direct
from convergent.store.schema import (
    dead_letters,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
    webhook_messages,
)
from convergent.webhooks import metrics
from convergent.webhooks.config import WebhookSettings
from convergent.webhooks.endpoints import active_secrets
from convergent.webhooks.outbound import CHANNEL
from convergent.webhooks.sender import Outcome, SendResult, send

__all__ = ["Dispatcher", "WebhookEvent"]

log = logging.getLogger(__name__)

AFTER_SEND = faults.register(
    "webhooks.after_send_before_record",
    "the callback was sent but its attempt not recorded: it is sent again (same webhook-id)",
)
_LEASE_MARGIN = 60.0  # seconds past the send timeout before another dispatcher may take a claim


@dataclass(frozen=True)
class WebhookEvent:
    """Something an operator should know: ``delivery_exhausted`` or ``endpoint_disabled``."""

    kind: str
    endpoint_id: uuid.UUID
    delivery_id: uuid.UUID | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class _Job:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    message_id: uuid.UUID
    attempt: int
    url: str
    secrets: list[str] = field(repr=False)  # never in logs
    payload: Any = field(repr=False)


# the statements of every round, built once (building one costs more than SQLite running it)
_d, _e, _m = webhook_deliveries, webhook_endpoints, webhook_messages
_IDS: sa.BindParameter[Any] = sa.bindparam("b_ids", expanding=True)
_NOW = sa.bindparam("b_now", type_=_d.c.updated_at.type)
_TAKE = (
    _d.update()
    .where(_d.c.id.in_(_IDS))
    .values(
        attempts=_d.c.attempts + 1,
        next_attempt_at=sa.bindparam("b_lease", type_=_d.c.next_attempt_at.type),
        updated_at=_NOW,
    )
)
# what a send needs of the deliveries a claim chose (locked by the claim's read on PostgreSQL)
_CHOSEN = (
    sa.select(
        _d.c.id,
        _d.c.endpoint_id,
        _d.c.message_id,
        _d.c.attempts,
        _e.c.url,
        _e.c.secrets,
        _m.c.payload,
    )
    .join(_e, _e.c.id == _d.c.endpoint_id)
    .join(_m, _m.c.id == _d.c.message_id)
    .where(_d.c.id.in_(_IDS))
)
_STILL_THERE = sa.select(_d.c.id).where(_d.c.id.in_(_IDS))
_INSERT_ATTEMPTS = webhook_attempts.insert()
_SUCCEEDED = (
    _d.update()
    .where(_d.c.id.in_(_IDS))
    .values(status="succeeded", last_status_code=sa.bindparam("b_code"), updated_at=_NOW)
)
_ANSWERING = (
    _e.update().where(_e.c.id.in_(_IDS), _e.c.failing_since.is_not(None)).values(failing_since=None)
)


class Dispatcher:
    """Delivers webhooks from ``store``; run it with ``await dispatcher.run(stop)``."""

    def __init__(
        self,
        store: Store,
        settings: WebhookSettings | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        on_event: Callable[[WebhookEvent], None] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or WebhookSettings()
        self._client = client
        self._own_client = client is None
        self._on_event = on_event
        self._in_flight: Tally[uuid.UUID] = Tally()
        self._tasks: set[asyncio.Task[None]] = set()
        self._results: list[tuple[_Job, SendResult, datetime]] = []
        self._wake = asyncio.Event()
        self._database_outage = Outage("database", log)

    # running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; in-flight sends are finished and recorded first."""
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._client_scope())
            sub = await stack.enter_async_context(self.store.notifier.subscribe(CHANNEL))
            helpers = [
                asyncio.create_task(self._forward(sub.wait)),
                asyncio.create_task(self._wake_on(stop)),
            ]
            try:
                while not stop.is_set():
                    try:
                        started = await self._round()
                        self._database_outage.up()
                    except Exception as exc:  # keep delivering; the database may come back
                        if is_transient(exc):
                            self._database_outage.down(exc)
                        else:
                            log.exception("webhook dispatcher step failed")
                        started = 0
                    if not started:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
                        self._wake.clear()
                await self._finish()
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)

    async def run_once(self) -> int:
        """Claim what is due now, send it, record it; the number of attempts made."""
        async with self._client_scope():
            started = await self._round()
            await self._finish()
        return started

    async def drain(self, max_rounds: int = 100) -> int:
        """``run_once`` until nothing is due; the number of attempts made."""
        total = 0
        for _ in range(max_rounds):
            made = await self.run_once()
            if not made:
                break
            total += made
        return total

    async def _forward(self, wait: Callable[[float | None], Any]) -> None:
        while True:
            await wait(None)
            self._wake.set()

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    @contextlib.asynccontextmanager
    async def _client_scope(self) -> Any:
        if self._client is not None:
            yield
            return
        limits = httpx.Limits(max_connections=self.settings.max_in_flight)
        async with httpx.AsyncClient(limits=limits, timeout=self.settings.timeout) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def _finish(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._round(claim=False)

    # one round: record what finished, claim what is due, in one transaction ------------------

    async def _round(self, *, claim: bool = True) -> int:
        """Record the finished sends and claim new ones in one transaction; how many started.

        One write transaction per round, not one per delivery: on SQLite every transaction
        queues for the single writer, so the round trips, not the sends, set the pace.
        """
        budget = self.settings.max_in_flight - sum(self._in_flight.values())
        limit = min(budget, self.settings.batch_size) if claim else 0
        if not self._results and (limit <= 0 or not await self._anything_due()):
            return 0  # a write transaction for nothing would queue behind every other writer
        batch, self._results = self._results, []
        try:
            async with self.store.begin() as conn:
                events = await self._record(conn, batch)
                jobs = await self._claim(conn, limit) if limit > 0 else []
        except BaseException:
            self._results[:0] = batch  # try again next round; the leases still hold them
            raise
        for event in events:
            metrics.EVENTS.labels(event.kind).inc()
            log.warning("webhook %s: endpoint %s %s", event.kind, event.endpoint_id, event.detail)
            if self._on_event is not None:
                self._on_event(event)
        for job in jobs:
            self._in_flight[job.endpoint_id] += 1
            task = asyncio.create_task(self._send(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(jobs)

    # claiming ------------------------------------------------------------------------------

    def _due_params(self) -> dict[str, Any]:
        limit = self.settings.per_endpoint_concurrency
        full = [endpoint for endpoint, n in self._in_flight.items() if n >= limit]
        params: dict[str, Any] = {"b_now": self.store.clock.now()}
        if full:
            params["b_full"] = full
        return params

    def _statement(self, kind: str, params: dict[str, Any]) -> Any:
        """``probe`` (is anything due?) or ``claim``, for the shape of ``params``: built once,
        executed with b_now, b_full (endpoints without a free slot) and b_limit."""
        with_full = "b_full" in params
        return self.store.sql.once(
            ("webhooks.due", kind, with_full), lambda: self._build(kind, with_full)
        )

    def _build(self, kind: str, with_full: bool) -> Any:
        """Due deliveries to enabled endpoints that have a free slot."""
        d, e = webhook_deliveries, webhook_endpoints
        # a claim reads only what choosing needs: behind a backlog most candidates wait for a
        # free slot, and decoding their payloads and secrets every round would be wasted
        columns = (d.c.id,) if kind == "probe" else (d.c.id, d.c.endpoint_id)
        due_at = d.c.next_attempt_at <= sa.bindparam("b_now", type_=d.c.next_attempt_at.type)
        stmt = (
            sa.select(*columns)
            .join(e, e.c.id == d.c.endpoint_id)
            .where(d.c.status == "pending", due_at, e.c.enabled.is_(True))
        )
        if with_full:
            stmt = stmt.where(d.c.endpoint_id.not_in(sa.bindparam("b_full", expanding=True)))
        if kind == "probe":
            return stmt.limit(1)
        stmt = stmt.order_by(d.c.next_attempt_at).limit(sa.bindparam("b_limit"))
        return self.store.sql.lock_for_claim(stmt, of=d)

    async def _anything_due(self) -> bool:
        params = self._due_params()
        async with self.store.statement() as conn:  # no BEGIN/COMMIT for a probe
            found = await direct.execute(conn, self._statement("probe", params), params)
            return found.first() is not None

    async def _claim(self, conn: AsyncConnection, limit: int) -> list[_Job]:
        store, cfg = self.store, self.settings
        now = store.clock.now()
        params = {**self._due_params(), "b_limit": limit}
        candidates = (await direct.execute(conn, self._statement("claim", params), params)).all()
        chosen, per_endpoint = [], Tally(self._in_flight)
        for row in candidates:
            if per_endpoint[row.endpoint_id] < cfg.per_endpoint_concurrency:
                per_endpoint[row.endpoint_id] += 1
                chosen.append(row)
        if not chosen:
            return []
        lease = now + timedelta(seconds=cfg.timeout + _LEASE_MARGIN)
        ids = [r.id for r in chosen]
        await direct.execute(conn, _TAKE, {"b_ids": ids, "b_lease": lease, "b_now": now})
        details = {r.id: r for r in await direct.execute(conn, _CHOSEN, {"b_ids": ids})}
        return [  # in the claim's order: oldest due first
            _Job(
                delivery_id=r.id,
                endpoint_id=r.endpoint_id,
                message_id=r.message_id,
                attempt=r.attempts,  # as _TAKE counted it
                url=r.url,
                secrets=active_secrets(r.secrets, now),
                payload=r.payload,
            )
            for r in (details[i] for i in ids)
        ]

    # sending -------------------------------------------------------------------------------

    async def _send(self, job: _Job) -> None:
        assert self._client is not None
        started_at = self.store.clock.now()
        try:
            timestamp = int(started_at.timestamp())
            result = await send(
                self._client,
                job.url,
                str(job.message_id),
                job.payload,
                job.secrets,
                timestamp,
                self.settings,
            )
        except Exception as exc:  # a bug in sending must not lose the delivery
            log.exception("sending webhook %s failed", job.delivery_id)
            result = SendResult(Outcome.ERROR, None, 0, error=f"{type(exc).__name__}: {exc}")
        fault_point(AFTER_SEND)
        if tracing.enabled():
            _trace_attempt(job, result, started_at)
        metrics.ATTEMPTS.labels(result.outcome).inc()
        core_metrics.WEBHOOK_DELIVERIES.labels(str(job.endpoint_id), result.outcome).inc()
        metrics.ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        self._results.append((job, result, started_at))
        self._in_flight[job.endpoint_id] -= 1
        if self._in_flight[job.endpoint_id] <= 0:
            del self._in_flight[job.endpoint_id]
        self._wake.set()

    # recording -----------------------------------------------------------------------------

    async def _record(
        self, conn: AsyncConnection, batch: list[tuple[_Job, SendResult, datetime]]
    ) -> list[WebhookEvent]:
        """Record a batch of attempts: a few statements for all successes, failures one by one."""
        if not batch:
            return []
        ids = [job.delivery_id for job, _, _ in batch]
        sql = self.store.sql
        still_there = sql.once("webhooks.still_there", lambda: sql.lock_row(_STILL_THERE))
        present = set((await direct.execute(conn, still_there, {"b_ids": ids})).scalars())
        batch = [item for item in batch if item[0].delivery_id in present]  # not deleted meanwhile
        if not batch:
            return []
        now = self.store.clock.now()
        await direct.execute(
            conn,
            _INSERT_ATTEMPTS,
            [
                {
                    "id": uuid7(),
                    "delivery_id": job.delivery_id,
                    "endpoint_id": job.endpoint_id,
                    "message_id": job.message_id,
                    "attempt": job.attempt,
                    "outcome": result.outcome,
                    "status_code": result.status_code,
                    "duration_ms": result.duration_ms,
                    "error": result.error,
                    "response_snippet": result.snippet,
                    "started_at": started_at,
                }
                for job, result, started_at in batch
            ],
        )
        delivered: dict[int | None, list[uuid.UUID]] = {}
        for job, result, _ in batch:
            if result.ok:
                delivered.setdefault(result.status_code, []).append(job.delivery_id)
        for status_code, done in delivered.items():
            await direct.execute(
                conn, _SUCCEEDED, {"b_ids": done, "b_code": status_code, "b_now": now}
            )
        answered = {job.endpoint_id for job, result, _ in batch if result.ok}
        if answered:
            await direct.execute(conn, _ANSWERING, {"b_ids": list(answered)})
        events: list[WebhookEvent] = []
        for job, result, _ in batch:
            if not result.ok:
                events += await self._record_failure(conn, job, result, now)
        return events

    async def _record_failure(
        self, conn: AsyncConnection, job: _Job, result: SendResult, now: datetime
    ) -> list[WebhookEvent]:
        cfg = self.settings
        d, e = webhook_deliveries, webhook_endpoints
        this = d.update().where(d.c.id == job.delivery_id)
        events: list[WebhookEvent] = []
        gone = result.outcome == Outcome.GONE
        delay = None if gone else cfg.delay_after(job.attempt, result.retry_after)
        if delay is None:
            await conn.execute(
                this.values(status="failed", last_status_code=result.status_code, updated_at=now)
            )
            why = "410 Gone" if gone else (result.error or f"HTTP {result.status_code}")
            events.append(await self._dead_letter(conn, job, why, now))
            core_metrics.DEAD_LETTERED.labels("webhook").inc()
        else:
            core_metrics.RETRIES.labels("webhook").inc()
            await conn.execute(
                this.values(
                    next_attempt_at=now + timedelta(seconds=delay),
                    last_status_code=result.status_code,
                    updated_at=now,
                )
            )
        row = (
            await conn.execute(
                sa.select(e.c.enabled, e.c.failing_since).where(e.c.id == job.endpoint_id)
            )
        ).one_or_none()
        if row is None or not row.enabled:
            return events
        since = row.failing_since or now
        if row.failing_since is None:
            await conn.execute(
                e.update().where(e.c.id == job.endpoint_id).values(failing_since=now)
            )
        reason = None
        if result.outcome == Outcome.GONE:
            reason = "the receiver answered 410 Gone"
        elif now - since >= cfg.disable_after:
            reason = f"failing continuously since {since.isoformat()}"
        if reason is not None:
            await conn.execute(
                e.update()
                .where(e.c.id == job.endpoint_id)
                .values(enabled=False, disabled_reason=reason, updated_at=now)
            )
            events.append(
                await self._event(conn, "endpoint_disabled", job, {"reason": reason}, now)
            )
        return events

    async def _dead_letter(
        self, conn: AsyncConnection, job: _Job, reason: str, now: datetime
    ) -> WebhookEvent:
        await conn.execute(
            dead_letters.insert().values(
                id=uuid7(),
                source="webhook",
                source_ref=str(job.delivery_id),
                name=str(job.endpoint_id),
                key=str(job.message_id),
                payload=job.payload,
                reason=reason,
                attempts=job.attempt,
                created_at=now,
            )
        )
        detail = {"message_id": str(job.message_id), "attempts": job.attempt, "reason": reason}
        return await self._event(conn, "delivery_exhausted", job, detail, now)

    async def _event(
        self, conn: AsyncConnection, kind: str, job: _Job, detail: dict[str, Any], now: datetime
    ) -> WebhookEvent:
        await conn.execute(
            webhook_events.insert().values(
                id=uuid7(),
                kind=kind,
                endpoint_id=job.endpoint_id,
                delivery_id=job.delivery_id,
                detail=detail,
                created_at=now,
            )
        )
        return WebhookEvent(kind, job.endpoint_id, job.delivery_id, detail)


def _trace_attempt(job: _Job, result: SendResult, started_at: datetime) -> None:
    """A CLIENT span for one delivery attempt (recorded after the fact, from its timing)."""
    start_ns = int(started_at.timestamp() * 1e9)
    span = tracing.tracer.start_span(
        "POST",
        kind=tracing.SpanKind.CLIENT,
        start_time=start_ns,
        attributes={
            "http.request.method": "POST",
            "server.address": urlsplit(job.url).hostname or "",
            "convergent.webhook.endpoint": str(job.endpoint_id),
            "convergent.webhook.message_id": str(job.message_id),
            "convergent.attempt": job.attempt,
            "convergent.outcome": str(result.outcome),
        },
    )
    if result.status_code is not None:
        span.set_attribute("http.response.status_code", result.status_code)
    if not result.ok:
        span.set_status(tracing.Status(tracing.StatusCode.ERROR, result.error or ""))
    span.end(end_time=start_ns + int(result.duration_ms * 1e6))
