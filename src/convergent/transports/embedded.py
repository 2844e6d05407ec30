"""``embedded://``: a durable log in the application's own database.

Positions are dense per (topic, partition) and assigned by the appender while it holds the
partition's head row, so positions commit in order and a reader at offset N never skips a row
that committed late. Consumer groups keep a committed offset per partition; each partition of a
group has one member at a time (a lease).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import TransportError
from convergent.messages import Message
from convergent.outbox.leases import PartitionLeases, tokens_still_held
from convergent.store import Store, direct
from convergent.store import Subscription as Wake
from convergent.store.schema import log_entries, log_heads, log_offsets
from convergent.topics import TOPICS, Topic, partition_for
from convergent.transports.base import (
    Delivery,
    Subscription,
    SubscriptionOptions,
    Transport,
    unreadable,
)

__all__ = ["LOG_CHANNEL", "EmbeddedTransport"]

LOG_CHANNEL = "convergent_log"
_POLL = 1.0  # fallback poll when a wake-up is missed
_RENEW_AT_MOST_EVERY = 0.5  # seconds between lease renewals of a consumer (ttl/3 if shorter)


_APPEND = sa.insert(log_entries)  # built once: building costs more than SQLite running it


class EmbeddedTransport(Transport):
    def __init__(self, store: Store, url: str = "embedded://") -> None:
        self.store = store
        self.url = url

    def partitions_of(self, topic: str) -> int:
        spec = TOPICS.get(topic)
        return spec.partitions if spec else 8

    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        try:
            async with self.store.begin() as conn:
                await self.append_in(conn, messages)
        except Exception as exc:
            error = TransportError(f"embedded append failed: {exc}")
            return [error] * len(messages)
        return [None] * len(messages)

    def appends_in(self, database: URL) -> bool:
        # a subclass that publishes its own way (one that fails some messages, say) is asked
        own = getattr(self.publish, "__func__", None) is EmbeddedTransport.publish
        return own and database == self.store.url

    async def append_in(self, conn: AsyncConnection, messages: Sequence[Message]) -> None:
        groups: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for m in messages:
            groups[(m.topic, partition_for(m.key, self.partitions_of(m.topic)))].append(m)
        now = self.store.clock.now()
        for (topic, partition), batch in sorted(groups.items()):  # fixed lock order
            await self._append(conn, topic, partition, batch, now)
        for topic in sorted({topic for topic, _ in groups}):  # consumers of others sleep on
            await self.store.notifier.notify(conn, LOG_CHANNEL, topic)

    async def _append(
        self, conn: AsyncConnection, topic: str, partition: int, batch: list[Message], now: datetime
    ) -> None:
        # one upsert moves the head past the batch and returns it (holding the head's row lock
        # to the commit: one appender per partition at a time)
        advance = self.store.sql.once("embedded.advance", self._build_advance)
        params = {"b_topic": topic, "b_partition": partition, "b_count": len(batch)}
        end = (await direct.execute(conn, advance, params)).one()[0]  # the new head
        start = int(end) - len(batch)
        rows = [
            {
                "topic": topic,
                "partition": partition,
                "position": start + i,
                "message_id": m.id,
                "key": m.key,
                "envelope": m.to_envelope(),
                "appended_at": now,
            }
            for i, m in enumerate(batch)
        ]
        await direct.execute(conn, _APPEND, rows)

    def _build_advance(self) -> Any:
        head = log_heads.c.next_position
        upsert = self.store.sql.insert(log_heads).values(
            topic=sa.bindparam("b_topic"),
            partition=sa.bindparam("b_partition"),
            next_position=sa.bindparam("b_count"),
        )
        return upsert.on_conflict_do_update(
            index_elements=[log_heads.c.topic, log_heads.c.partition],
            set_={"next_position": head + sa.bindparam("b_count")},
        ).returning(head)

    async def subscribe(
        self, topic: Topic, group: str, options: SubscriptionOptions | None = None
    ) -> Subscription:
        return EmbeddedSubscription(self.store, topic, group, options or SubscriptionOptions())

    async def apply_retention(self, older_than: datetime) -> int:
        """Drop log entries appended before ``older_than`` (consumers behind them skip ahead)."""
        async with self.store.begin() as conn:
            result = await conn.execute(
                sa.delete(log_entries).where(log_entries.c.appended_at < older_than)
            )
        return int(result.rowcount)

    async def compact(self, topic: Topic, older_than: datetime) -> int:
        """Entity topics: drop entries appended before ``older_than`` that a later entry of the
        same key supersedes (the latest state, tombstones included, always stays)."""
        newer = log_entries.alias("newer")
        superseded = (
            sa.select(newer.c.position)
            .where(
                newer.c.topic == log_entries.c.topic,
                newer.c.partition == log_entries.c.partition,
                newer.c.key == log_entries.c.key,
                newer.c.position > log_entries.c.position,
            )
            .exists()
        )
        async with self.store.begin() as conn:
            result = await conn.execute(
                sa.delete(log_entries).where(
                    log_entries.c.topic == topic.name,
                    log_entries.c.appended_at < older_than,
                    superseded,
                )
            )
        return int(result.rowcount)


class EmbeddedDelivery(Delivery):
    def __init__(
        self,
        sub: EmbeddedSubscription,
        message: Message,
        partition: int,
        position: int,
        attempt: int,
    ) -> None:
        self.sub = sub
        self.message = message
        self.partition = partition
        self.position = position
        self.attempt = attempt
        self.order_key = f"p{partition}"

    async def ack(self) -> None:
        await self.sub.settle(self, None)

    async def nak(self, delay: float) -> None:
        await self.sub.settle(self, delay)


class EmbeddedSubscription(Subscription):
    def __init__(
        self, store: Store, topic: Topic, group: str, options: SubscriptionOptions
    ) -> None:
        self.store = store
        self.topic = topic
        self.group = group
        self.options = options
        self.leases = PartitionLeases(
            f"log/{group}/{topic.name}",
            topic.partitions,
            secrets.token_hex(6),
            ttl=options.ack_wait / 2,  # a dead member's partitions move on after this
        )
        self._where = (log_offsets.c.consumer_group == group) & (log_offsets.c.topic == topic.name)
        # the statements of every poll and settle, built once (building one costs more than
        # SQLite running it)
        o, log = log_offsets, log_entries
        # only the partitions with something at or past their offset: one probe of the log's
        # primary key each, instead of a query per held partition on every wake-up
        waiting = sa.exists().where(
            log.c.topic == o.c.topic,
            log.c.partition == o.c.partition,
            log.c.position >= o.c.position,
        )
        self._offsets = (
            sa.select(o)
            .where(self._where, o.c.partition.in_(sa.bindparam("b_held", expanding=True)), waiting)
            .order_by(o.c.partition)
        )
        self._entries = (
            sa.select(log)
            .where(
                log.c.topic == topic.name,
                log.c.partition == sa.bindparam("b_partition"),
                log.c.position >= sa.bindparam("b_position"),
            )
            .order_by(log.c.position)
            .limit(sa.bindparam("b_limit"))
        )
        this = self._where & (o.c.partition == sa.bindparam("b_partition"))
        self._advance = (
            sa.update(o)
            .where(this, o.c.position <= sa.bindparam("b_position"))
            .values(position=sa.bindparam("b_position") + 1, attempts=0, next_attempt_at=None)
        )
        self._renew_every = min(self.leases.ttl.total_seconds() / 3, _RENEW_AT_MOST_EVERY)
        self._renew_at = 0.0  # loop time of the next lease renewal: the first poll renews

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.store.notifier.subscribe(LOG_CHANNEL) as wake:
            while True:
                found = await self._poll(max_messages)
                if found or loop.time() >= deadline:
                    return found
                # wait for an append to this topic (a hint naming another topic is no reason
                # to read), or the fallback poll
                poll_at = min(deadline, loop.time() + _POLL)
                while loop.time() < poll_at:
                    woke = await wake.wait(poll_at - loop.time())
                    if woke and self._concerns_us(wake.drain()):
                        break

    def _concerns_us(self, hints: list[str]) -> bool:
        """Does a wake-up name this topic? One without a topic (or too many to keep) might."""
        if not hints or len(hints) >= Wake.KEPT:
            return True
        return any(hint in ("", self.topic.name) for hint in hints)

    async def _poll(self, max_messages: int) -> list[Delivery]:
        now = self.store.clock.now()
        loop_now = asyncio.get_running_loop().time()
        # Renewing the leases is a write transaction of several statements: do it on a cadence,
        # not on every wake-up (each publish wakes every consumer; on SQLite each renewal queues
        # behind the single writer). Reading under leases held a moment ago is safe: whatever
        # is done under a lease is settled only while its token is still ours.
        if loop_now >= self._renew_at:
            async with self.store.begin() as conn:
                held = await self.leases.refresh(conn, now)
                if held:
                    await conn.execute(
                        self.store.sql.insert(log_offsets).on_conflict_do_nothing(),
                        [
                            {
                                "consumer_group": self.group,
                                "topic": self.topic.name,
                                "partition": p,
                                "position": 0,
                            }
                            for p in held
                        ],
                    )
            self._renew_at = loop_now + self._renew_every
        held = self.leases.held
        if not held:
            return []
        async with self.store.read() as conn:
            offsets = (await direct.execute(conn, self._offsets, {"b_held": sorted(held)})).all()
            out: list[Delivery] = []
            for off in offsets:
                if off.next_attempt_at is not None and off.next_attempt_at > now:
                    continue  # the message at the offset waits for its retry; its key waits too
                entries = await direct.execute(
                    conn,
                    self._entries,
                    {
                        "b_partition": off.partition,
                        "b_position": off.position,
                        "b_limit": max_messages - len(out),
                    },
                )
                for e in entries:
                    attempt = off.attempts + 1 if e.position == off.position else 1
                    problem: str | None = None
                    raw: dict[str, Any] | None = None
                    try:
                        message = Message.from_envelope(self.topic.name, e.key, e.envelope)
                    except Exception as exc:  # written by hand, or damaged: dead-lettered
                        message, problem, raw = unreadable(
                            self.topic.name,
                            e.key,
                            e.message_id,
                            f"log {self.topic.name}/{e.partition}@{e.position}",
                            exc,
                            {"envelope": json.dumps(e.envelope, default=str)},
                        )
                    d = EmbeddedDelivery(self, message, e.partition, e.position, attempt)
                    d.problem, d.raw = problem, raw
                    out.append(d)
                if len(out) >= max_messages:
                    break
        return out

    async def settle(self, d: EmbeddedDelivery, delay: float | None) -> None:
        now = self.store.clock.now()
        async with self.store.begin() as conn:
            if d.partition not in await tokens_still_held(
                conn, self.leases.group, self.leases.held, self.leases.holder
            ):
                return  # another member owns the partition now; it will redeliver
            if delay is None:
                await direct.execute(
                    conn, self._advance, {"b_partition": d.partition, "b_position": d.position}
                )
            else:
                where = self._where & (log_offsets.c.partition == d.partition)
                await conn.execute(
                    sa.update(log_offsets)
                    .where(where, log_offsets.c.position == d.position)
                    .values(
                        attempts=log_offsets.c.attempts + 1,
                        next_attempt_at=now + timedelta(seconds=delay),
                    )
                )

    async def close(self) -> None:
        async with self.store.begin() as conn:
            await self.leases.release_all(conn)
