"""Consuming: each message handled in ONE transaction with its inbox row.

Duplicates (redeliveries, a relay that published twice) find the inbox row and are skipped, so a
handler's effects happen once. A failing handler is retried with backoff; after
``retry.max_attempts`` the message goes to ``convergent_dead_letters`` (source ``consumer``).

Order per key: while a message waits for its retry the transport holds back the rest of its
partition (embedded and NATS: the partition's next message is not handed out; Kafka: the partition
is paused and rewound). Once a message is dead-lettered, the later messages of its key are parked
(``convergent_parked``, acked at the broker) until the letter is retried (``convergent dlq
retry``: the letter is handled first, then the parked ones, in order) or discarded (the parked
ones go on); other keys flow meanwhile. ``on_dead_letter="skip"`` moves on at once instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import sqlalchemy as sa
from prometheus_client import Histogram
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import metrics, tracing
from convergent.errors import SchemaViolation, StoreUnavailable
from convergent.faults import fault_point, register
from convergent.ids import uuid7
from convergent.messages import Message
from convergent.outages import Outage, is_transient
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.inbox import record_once
from convergent.store.schema import dead_letters, parked
from convergent.topics import Topic, get_topic
from convergent.transports.base import Delivery, Subscription, SubscriptionOptions, Transport

__all__ = ["CONSUMERS", "Consumer", "ConsumerSpec", "Handler", "OnDeadLetter", "consumer"]

log = logging.getLogger(__name__)

Handler = Callable[[AsyncConnection, Message], Awaitable[None]]
#: what a dead letter does to the later messages of its key: hold them, or let them go
OnDeadLetter = Literal["park", "skip"]

AFTER_HANDLE = register(
    "consumer.after_commit_before_ack",
    "handler and inbox row committed, broker not acked: the redelivery is skipped as a duplicate",
)

TIME_TO_CONSISTENCY = Histogram(
    "convergent_time_to_consistency_seconds",
    "From a message's event time to its effect committed by a consumer",
    ["group", "topic"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    topic: Topic
    group: str
    handler: Handler
    retry: RetryPolicy
    on_dead_letter: OnDeadLetter = "park"


#: consumers declared with ``@consumer``
CONSUMERS: list[ConsumerSpec] = []


def consumer(
    topic: Topic | str,
    group: str,
    *,
    retry: RetryPolicy | None = None,
    on_dead_letter: OnDeadLetter = "park",
) -> Callable[[Handler], Handler]:
    """Declare ``handler`` as consumer group ``group`` of ``topic`` (run with ``Consumer``)."""

    def register_handler(handler: Handler) -> Handler:
        policy = retry or RetryPolicy()
        spec = ConsumerSpec(get_topic(topic), group, handler, policy, on_dead_letter)
        CONSUMERS.append(spec)
        return handler

    return register_handler


class Consumer:
    """Runs one consumer group member: fetch, handle once, ack; nak or dead-letter on failure."""

    def __init__(
        self,
        store: Store,
        transport: Transport,
        topic: Topic | str,
        group: str,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        batch_size: int = 100,
        fetch_timeout: float = 1.0,
        outage_patience: float = 300.0,
        on_dead_letter: OnDeadLetter = "park",
        ack_wait: float = 30.0,
    ) -> None:
        self.store = store
        self.transport = transport
        self.topic = get_topic(topic)
        self.group = group
        self.handler = handler
        self.retry = retry or RetryPolicy()
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.outage_patience = outage_patience
        if on_dead_letter not in ("park", "skip"):
            raise ValueError(f"on_dead_letter must be 'park' or 'skip', not {on_dead_letter!r}")
        self.on_dead_letter = on_dead_letter
        self.ack_wait = ack_wait
        self.handled = 0
        self._sub: Subscription | None = None
        self._stop = asyncio.Event()
        self.outage = Outage(f"consumer {group}/{self.topic.name}: broker or database", log)

    @classmethod
    def from_spec(cls, store: Store, transport: Transport, spec: ConsumerSpec) -> Consumer:
        return cls(
            store,
            transport,
            spec.topic,
            spec.group,
            spec.handler,
            retry=spec.retry,
            on_dead_letter=spec.on_dead_letter,
        )

    async def subscription(self) -> Subscription:
        if self._sub is None:
            await self.transport.start()
            await self.transport.ensure_topic(self.topic)
            options = SubscriptionOptions(
                max_deliver=self.retry.max_attempts, ack_wait=self.ack_wait
            )
            self._sub = await self.transport.subscribe(self.topic, self.group, options)
        return self._sub

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set."""
        self._stop = stop
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                    self.outage.up()
                except Exception as exc:
                    if is_transient(exc):
                        self.outage.down(exc)
                    else:  # a bug: with its traceback
                        log.exception("consumer %s/%s pass failed", self.group, self.topic.name)
                    await asyncio.sleep(self.fetch_timeout)
        finally:
            await self.close()

    async def run_once(self, timeout: float | None = None) -> int:
        """Fetch one batch and settle every delivery in it; returns how many were fetched."""
        sub = await self.subscription()
        await self._release_parked()
        deliveries = await sub.fetch(
            self.batch_size, self.fetch_timeout if timeout is None else timeout
        )
        self._note_lag(deliveries)
        waiting: dict[str, float] = {}  # order keys held back behind a retry, with its delay
        for d in deliveries:
            if d.order_key in waiting:
                await d.nak(waiting[d.order_key])
                continue
            delay = await self._handle_through_outages(d)
            if delay is not None:
                waiting[d.order_key] = delay
        return len(deliveries)

    def _note_lag(self, deliveries: list[Delivery]) -> None:
        lag = 0.0
        if deliveries:
            oldest = min(d.message.time for d in deliveries)
            lag = max(0.0, (self.store.clock.now() - oldest).total_seconds())
        metrics.CONSUMER_LAG_SECONDS.labels(self.group, self.topic.name).set(lag)

    async def _handle_through_outages(self, d: Delivery) -> float | None:
        """Handle ``d``; while the database is away, hold it and try again once it answers.

        An outage is nobody's fault: it must not spend the message's attempts, or a restart
        longer than the backoff would dead-letter (or, past the broker's redelivery limit, drop)
        every message in flight. Held past ``outage_patience``, it is handed back to the broker.
        """
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.outage_patience
        pause = 0.2
        while True:
            try:
                return await self._handle(d)
            except StoreUnavailable as exc:
                if loop.time() >= give_up_at or self._stop.is_set():
                    delay = self.retry.backoff(d.attempt)
                    await d.nak(delay)
                    return delay
                if pause == 0.2:
                    log.warning("consumer %s: the database is away (%s); holding", self.group, exc)
                with contextlib.suppress(Exception):  # the broker may be away too
                    await d.working()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _handle(self, d: Delivery) -> float | None:
        """Handle and settle one delivery; returns the retry delay when it was nak'ed. Traced,
        the span continues the trace of the message's producer (its ``traceparent``)."""
        if not tracing.enabled():
            return await self._settle(d)
        message = d.message
        with tracing.tracer.start_as_current_span(
            f"process {message.topic}",
            context=tracing.parent_from(message.headers),
            kind=tracing.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "convergent",
                "messaging.operation.type": "process",
                "messaging.destination.name": message.topic,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": message.id,
                "messaging.message.conversation_id": message.key,
                "convergent.attempt": d.attempt,
            },
        ):
            return await self._settle(d)

    async def _settle(self, d: Delivery) -> float | None:
        message = d.message
        if d.problem is not None:  # unreadable on the wire: nothing to retry, nothing to park
            await self._dead_letter_malformed(d)
            return None
        try:
            async with self.store.begin() as conn:
                now = self.store.clock.now()
                outcome = "duplicate"
                if self.topic.schema is not None and message.data is not None:
                    self.topic.decode(message.data)  # SchemaViolation: dead-lettered at once
                if self.on_dead_letter == "park" and await self._parked(conn, message.key):
                    await self._park(conn, message, None)  # behind its key's dead letter
                    outcome = "parked"
                elif await record_once(conn, self.group, message.id, now):
                    await self.handler(conn, message)
                    lag = (now - message.time).total_seconds()
                    TIME_TO_CONSISTENCY.labels(self.group, self.topic.name).observe(max(0.0, lag))
                    outcome = "handled"
        except StoreUnavailable:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            # a payload that fails its schema fails the same way every time: no retries
            if d.attempt >= self.retry.max_attempts or isinstance(exc, SchemaViolation):
                async with self.store.begin() as conn:
                    letter = await self._dead_letter(conn, message, d.attempt, reason)
                    if self.on_dead_letter == "park":
                        await self._park(conn, message, letter)
                metrics.DEAD_LETTERED.labels("consumer").inc()
                metrics.CONSUMED.labels(self.group, self.topic.name, "dead_lettered").inc()
                await d.ack()
                return None
            delay = self.retry.backoff(d.attempt)
            metrics.RETRIES.labels("consumer").inc()
            metrics.CONSUMED.labels(self.group, self.topic.name, "retried").inc()
            log.warning(
                "consumer %s: %s failed (attempt %d): %s",
                self.group,
                message.id,
                d.attempt,
                reason,
                extra={"topic": message.topic, "key": message.key, "message_id": message.id},
            )
            await d.nak(delay)
            return delay
        fault_point(AFTER_HANDLE)
        await d.ack()
        self.handled += 1
        metrics.CONSUMED.labels(self.group, self.topic.name, outcome).inc()
        return None

    async def _dead_letter_malformed(self, d: Delivery) -> None:
        log.warning("consumer %s: dead-lettering %s", self.group, d.problem)
        async with self.store.begin() as conn:
            await conn.execute(
                dead_letters.insert().values(
                    id=uuid7(),
                    source="consumer",
                    source_ref=d.message.id,
                    name=self.topic.name,
                    key=d.message.key,
                    payload={
                        "topic": self.topic.name,
                        "key": d.message.key,
                        "group": self.group,
                        "raw": d.raw,
                    },
                    reason=d.problem or "malformed",
                    attempts=d.attempt,
                    created_at=self.store.clock.now(),
                )
            )
        metrics.DEAD_LETTERED.labels("consumer").inc()
        metrics.CONSUMED.labels(self.group, self.topic.name, "dead_lettered").inc()
        await d.ack()

    def _of_key(self, key: str) -> Any:
        return (
            (parked.c.consumer_group == self.group)
            & (parked.c.topic == self.topic.name)
            & (parked.c.key == key)
        )

    async def _parked(self, conn: AsyncConnection, key: str) -> bool:
        found = await conn.scalar(sa.select(parked.c.id).where(self._of_key(key)).limit(1))
        return found is not None

    async def _park(self, conn: AsyncConnection, message: Message, letter: Any) -> None:
        await conn.execute(
            sa.insert(parked).values(
                consumer_group=self.group,
                topic=self.topic.name,
                key=message.key,
                message_id=message.id,
                envelope=message.to_envelope(),
                dead_letter_id=letter,
                parked_at=self.store.clock.now(),
            )
        )

    async def _release_parked(self) -> int:
        """Handle the parked messages free to go: each key's oldest, once its letter was
        retried or discarded (a retried letter's own message is the oldest). Returns how many
        were settled."""
        now = self.store.clock.now()
        mine = (parked.c.consumer_group == self.group) & (parked.c.topic == self.topic.name)
        async with self.store.statement() as conn:  # a read: no BEGIN/COMMIT round trips
            heads = sa.select(sa.func.min(parked.c.id)).where(mine).group_by(parked.c.key)
            rows = (
                await conn.execute(
                    sa.select(parked).where(
                        parked.c.id.in_(heads.scalar_subquery()),
                        parked.c.dead_letter_id.is_(None),
                        sa.or_(parked.c.next_attempt_at.is_(None), parked.c.next_attempt_at <= now),
                    )
                )
            ).all()
        settled = 0
        for row in rows:
            while row is not None and not self._stop.is_set():
                row = await self._release_one(row)
                settled += 1
        return settled

    async def _release_one(self, row: Any) -> Any:
        """Handle one parked message; returns the next of its key when that may go now."""
        message = Message.from_envelope(row.topic, row.key, row.envelope)
        try:
            async with self.store.begin() as conn:
                now = self.store.clock.now()
                held = sa.select(parked.c.id).where(parked.c.id == row.id)
                if await conn.scalar(self.store.sql.lock_row(held)) is None:
                    return None  # another member of the group released it
                if await record_once(conn, self.group, message.id, now):
                    await self.handler(conn, message)
                await conn.execute(sa.delete(parked).where(parked.c.id == row.id))
        except StoreUnavailable:
            return None  # the next pass tries again
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            attempt = row.attempts + 1
            async with self.store.begin() as conn:
                if attempt >= self.retry.max_attempts:
                    letter = await self._dead_letter(conn, message, attempt, reason)
                    values: dict[str, Any] = {"dead_letter_id": letter, "attempts": 0}
                else:
                    delay = self.retry.backoff(attempt)
                    when = self.store.clock.now() + timedelta(seconds=delay)
                    values = {"attempts": attempt, "next_attempt_at": when}
                await conn.execute(sa.update(parked).where(parked.c.id == row.id).values(values))
            return None
        self.handled += 1
        async with self.store.statement() as conn:
            after = (
                await conn.execute(
                    sa.select(parked).where(self._of_key(row.key)).order_by(parked.c.id).limit(1)
                )
            ).first()
        if after is None or after.dead_letter_id is not None:
            return None
        if after.next_attempt_at is not None and after.next_attempt_at > self.store.clock.now():
            return None
        return after

    async def _dead_letter(
        self, conn: AsyncConnection, message: Message, attempts: int, reason: str
    ) -> Any:
        letter = uuid7()
        await conn.execute(
            dead_letters.insert().values(
                id=letter,
                source="consumer",
                source_ref=message.id,
                name=message.topic,
                key=message.key,
                payload={
                    "topic": message.topic,
                    "key": message.key,
                    "group": self.group,
                    "envelope": message.to_envelope(),
                },
                reason=reason,
                attempts=attempts,
                created_at=self.store.clock.now(),
            )
        )
        return letter

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.close()
