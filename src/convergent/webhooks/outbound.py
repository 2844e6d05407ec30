"""Writing callbacks: in the caller's transaction, fanned out to endpoints at write time.

Nothing is sent before the transaction commits; the commit wakes the dispatcher.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import NotFound
from convergent.ids import uuid7
from convergent.store import direct, store_of
from convergent.store.notify import NotifyingWrite
from convergent.store.schema import (
    dead_letters,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_messages,
)
from convergent.webhooks.endpoints import wants

__all__ = [
    "CHANNEL",
    "Attempt",
    "enqueue",
    "list_attempts",
    "recover",
    "resend",
]

#: notification channel that wakes dispatchers
CHANNEL = "convergent_webhooks"


# built once: it runs for every event
_ENABLED_ENDPOINTS = sa.select(webhook_endpoints.c.id, webhook_endpoints.c.event_types).where(
    webhook_endpoints.c.enabled.is_(True)
)


async def enqueue(
    conn: AsyncConnection,
    event_type: str,
    data: Any,
    *,
    message_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Record an event for every enabled endpoint that wants ``event_type``; returns its id.

    ``data`` should carry the resource's id, state and version so receivers can drop stale
    updates. Runs in the caller's transaction: it is sent only if that transaction commits.
    An event no endpoint wants is not recorded (the id is returned all the same).
    """
    store = store_of(conn)
    message_id = message_id or uuid7()
    rows = await direct.execute(conn, _ENABLED_ENDPOINTS, {})
    targets = [r.id for r in rows if wants(r.event_types, event_type)]
    if not targets:
        return message_id
    now = store.clock.now()
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    message = {"id": message_id, "event_type": event_type, "payload": payload, "created_at": now}
    if len(targets) == 1:  # the common case: the message, its delivery and the wake-up at once
        await store.notifier.write(
            conn, _ONE_DELIVERY, message, _delivery(message_id, targets[0], now)
        )
        return message_id
    await direct.execute(conn, _INSERT_MESSAGE, message)
    await _add_deliveries(conn, [(message_id, t) for t in targets], now)
    await store.notifier.notify(conn, CHANNEL)
    return message_id


# built once: building a statement costs more than SQLite running it
_INSERT_MESSAGE = webhook_messages.insert()
_INSERT_DELIVERIES = webhook_deliveries.insert()
_DELIVERY_COLUMNS = [
    "id",
    "message_id",
    "endpoint_id",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "updated_at",
]
_ONE_DELIVERY = NotifyingWrite(
    webhook_messages,
    ["id", "event_type", "payload", "created_at"],
    CHANNEL,
    then=(webhook_deliveries, _DELIVERY_COLUMNS),
)


def _delivery(message_id: uuid.UUID, endpoint_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid7(),
        "message_id": message_id,
        "endpoint_id": endpoint_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def _add_deliveries(
    conn: AsyncConnection, pairs: list[tuple[uuid.UUID, uuid.UUID]], now: datetime
) -> None:
    if not pairs:
        return
    await direct.execute(
        conn,
        _INSERT_DELIVERIES,
        [_delivery(message_id, endpoint, now) for message_id, endpoint in pairs],
    )


async def resend(conn: AsyncConnection, message_id: uuid.UUID, endpoint_id: uuid.UUID) -> None:
    """Send one message to one endpoint again, now (same ``webhook-id``)."""
    exists = await conn.execute(
        sa.select(webhook_messages.c.id).where(webhook_messages.c.id == message_id)
    )
    if exists.one_or_none() is None:
        raise NotFound(f"no webhook message {message_id}")
    await _require_endpoint(conn, endpoint_id)
    store = store_of(conn)
    await _add_deliveries(conn, [(message_id, endpoint_id)], store.clock.now())
    await _letters_retried(conn, endpoint_id, [message_id])
    await store.notifier.notify(conn, CHANNEL)


async def recover(conn: AsyncConnection, endpoint_id: uuid.UUID, since: datetime) -> int:
    """Resend every message since ``since`` whose delivery to the endpoint failed; a count."""
    await _require_endpoint(conn, endpoint_id)
    d = webhook_deliveries
    failed = sa.select(d.c.message_id).where(
        d.c.endpoint_id == endpoint_id, d.c.status == "failed", d.c.created_at >= since
    )
    still_open = sa.select(d.c.message_id).where(
        d.c.endpoint_id == endpoint_id, d.c.status.in_(("pending", "succeeded"))
    )
    rows = await conn.execute(failed.except_(still_open))
    ids = sorted({r.message_id for r in rows})
    store = store_of(conn)
    await _add_deliveries(conn, [(m, endpoint_id) for m in ids], store.clock.now())
    await _letters_retried(conn, endpoint_id, ids)
    if ids:
        await store.notifier.notify(conn, CHANNEL)
    return len(ids)


async def _letters_retried(
    conn: AsyncConnection, endpoint_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> None:
    """The dead letters of deliveries sent again are handled: one list, never stale."""
    if not message_ids:
        return
    d = dead_letters.c
    await conn.execute(
        sa.update(dead_letters)
        .where(
            d.source == "webhook",
            d.status == "dead",
            d.name == str(endpoint_id),
            d.key.in_([str(m) for m in message_ids]),
        )
        .values(status="retried", resolved_at=store_of(conn).clock.now())
    )


async def _require_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID) -> None:
    found = await conn.execute(
        sa.select(webhook_endpoints.c.id).where(webhook_endpoints.c.id == endpoint_id)
    )
    if found.one_or_none() is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")


@dataclass(frozen=True)
class Attempt:
    id: uuid.UUID
    delivery_id: uuid.UUID
    message_id: uuid.UUID
    attempt: int
    outcome: str
    status_code: int | None
    duration_ms: int
    error: str | None
    response_snippet: str | None
    started_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "delivery_id": str(self.delivery_id),
            "message_id": str(self.message_id),
            "attempt": self.attempt,
            "outcome": self.outcome,
            "status_code": self.status_code,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "response_snippet": self.response_snippet,
            "started_at": self.started_at.isoformat(),
        }


async def list_attempts(
    conn: AsyncConnection, endpoint_id: uuid.UUID, limit: int = 100
) -> list[Attempt]:
    """The endpoint's latest attempts, newest first."""
    await _require_endpoint(conn, endpoint_id)
    a = webhook_attempts
    rows = await conn.execute(
        sa.select(a)
        .where(a.c.endpoint_id == endpoint_id)
        .order_by(a.c.started_at.desc(), a.c.id.desc())
        .limit(limit)
    )
    return [
        Attempt(
            id=r.id,
            delivery_id=r.delivery_id,
            message_id=r.message_id,
            attempt=r.attempt,
            outcome=r.outcome,
            status_code=r.status_code,
            duration_ms=r.duration_ms,
            error=r.error,
            response_snippet=r.response_snippet,
            started_at=r.started_at,
        )
        for r in rows
    ]
