"""The Messages page: what the relay still has to publish, and how far each consumer group is.

Lag of consumers on NATS or Kafka lives in the broker; what is shown here is the outbox (every
transport) and the embedded log's committed offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store.schema import leases, log_entries, log_heads, log_offsets, outbox, parked

__all__ = ["Messages", "ParkedKey", "messages", "parked_keys"]

#: parked keys shown at most (the count per group is exact)
PARKED_SHOWN = 200


@dataclass(frozen=True)
class Messages:
    outbox: list[Any]  # topic, partition, backlog, oldest, retrying, last_error
    relay_leases: list[Any]  # name, holder, lease_until
    log_heads: list[Any]  # topic, partition, next_position
    groups: list[Any]  # consumer_group, topic, partition, position, head, lag, attempts, ...
    parked: dict[tuple[str, str], int]  # (group, topic) -> parked keys
    parked_list: list[ParkedKey]  # the oldest PARKED_SHOWN of them


@dataclass(frozen=True)
class ParkedKey:
    """A key a consumer group holds back behind a dead letter (``convergent_parked``)."""

    consumer_group: str
    topic: str
    key: str
    messages: int  # parked messages of the key, the dead-lettered one included
    since: Any  # when the first was parked
    dead_letter_id: Any  # the letter it waits for (None: released, being handled again)


async def parked_keys(conn: AsyncConnection) -> tuple[dict[tuple[str, str], int], list[ParkedKey]]:
    """Keys consumer groups have parked: the count per (group, topic), and the oldest keys."""
    p = parked.c
    per_group = (
        await conn.execute(
            sa.select(p.consumer_group, p.topic, sa.func.count(sa.distinct(p.key))).group_by(
                p.consumer_group, p.topic
            )
        )
    ).all()
    keys = (
        await conn.execute(
            sa.select(
                p.consumer_group,
                p.topic,
                p.key,
                sa.func.count().label("messages"),
                sa.func.min(p.parked_at).label("since"),
            )
            .group_by(p.consumer_group, p.topic, p.key)
            .order_by(sa.func.min(p.id))
            .limit(PARKED_SHOWN)
        )
    ).all()
    letters = {
        (r.consumer_group, r.topic, r.key): r.dead_letter_id
        for r in (
            await conn.execute(
                sa.select(p.consumer_group, p.topic, p.key, p.dead_letter_id).where(
                    p.dead_letter_id.is_not(None)
                )
            )
        ).all()
    }
    return (
        {(g, t): int(n) for g, t, n in per_group},
        [
            ParkedKey(
                k.consumer_group,
                k.topic,
                k.key,
                int(k.messages),
                k.since,
                letters.get((k.consumer_group, k.topic, k.key)),
            )
            for k in keys
        ],
    )


async def messages(conn: AsyncConnection) -> Messages:
    o = outbox.c
    backlog = (
        await conn.execute(
            sa.select(
                o.topic,
                o.partition,
                sa.func.count().label("backlog"),
                sa.func.min(o.created_at).label("oldest"),
                sa.func.count(o.next_attempt_at).label("retrying"),
                sa.func.max(o.last_error).label("last_error"),
            )
            .group_by(o.topic, o.partition)
            .order_by(o.topic, o.partition)
        )
    ).all()
    relay = (
        await conn.execute(
            sa.select(leases)
            .where(leases.c.name.like("relay/%"), leases.c.name.not_like("relay/member/%"))
            .order_by(leases.c.name)
        )
    ).all()
    heads = (
        await conn.execute(sa.select(log_heads).order_by(log_heads.c.topic, log_heads.c.partition))
    ).all()
    h, f, e = log_heads.c, log_offsets.c, log_entries.c
    oldest = (
        sa.select(e.appended_at)
        .where(e.topic == f.topic, e.partition == f.partition, e.position == f.position)
        .scalar_subquery()
    )
    groups = (
        await conn.execute(
            sa.select(
                f.consumer_group,
                f.topic,
                f.partition,
                f.position,
                h.next_position.label("head"),
                (h.next_position - f.position).label("lag"),
                f.attempts,
                f.next_attempt_at,
                oldest.label("oldest_waiting"),
            )
            .join(log_heads, sa.and_(h.topic == f.topic, h.partition == f.partition))
            .order_by(f.consumer_group, f.topic, f.partition)
        )
    ).all()
    counts, shown = await parked_keys(conn)
    return Messages(list(backlog), list(relay), list(heads), list(groups), counts, shown)
