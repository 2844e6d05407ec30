"""The Idempotency keys page: requests in flight and recently answered.

Never shown: the stored response (it may hold anything a handler returned) and the raw scope,
which may be a client's credential; the scope appears as a short fingerprint instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.console.queries.paging import Page, decode_cursor, encode_cursor
from convergent.store.schema import idempotency_keys

__all__ = ["KeyRow", "keys_in_flight", "recent_keys", "scope_fingerprint"]


@dataclass(frozen=True)
class KeyRow:
    client: str  # fingerprint of the scope
    key: str
    status: str
    response_status: int | None
    created_at: datetime
    completed_at: datetime | None
    locked_until: datetime | None
    expires_at: datetime


def scope_fingerprint(scope: str) -> str:
    return "client:" + hashlib.sha256(scope.encode()).hexdigest()[:10]


_COLUMNS = (
    idempotency_keys.c.scope,
    idempotency_keys.c.key,
    idempotency_keys.c.status,
    idempotency_keys.c.response_status,
    idempotency_keys.c.created_at,
    idempotency_keys.c.completed_at,
    idempotency_keys.c.locked_until,
    idempotency_keys.c.expires_at,
)


def _row(r: Any) -> KeyRow:
    m = r._mapping
    return KeyRow(
        scope_fingerprint(m["scope"]),
        m["key"],
        m["status"],
        m["response_status"],
        m["created_at"],
        m["completed_at"],
        m["locked_until"],
        m["expires_at"],
    )


async def keys_in_flight(conn: AsyncConnection, limit: int = 100) -> list[KeyRow]:
    """Oldest first: a key in progress for long is a request that is stuck or died."""
    k = idempotency_keys.c
    rows = await conn.execute(
        sa.select(*_COLUMNS).where(k.status == "in_progress").order_by(k.created_at).limit(limit)
    )
    return [_row(r) for r in rows]


async def recent_keys(
    conn: AsyncConnection, *, cursor: str | None = None, limit: int = 50
) -> Page[KeyRow]:
    """Most recent first, by expiry (keys are kept for one retention, so expiry follows creation)
    on its index."""
    k = idempotency_keys.c
    stmt = sa.select(*_COLUMNS).order_by(k.expires_at.desc(), k.key.desc()).limit(limit + 1)
    if cursor:
        at, key = decode_cursor(cursor, 2)
        stmt = stmt.where(sa.tuple_(k.expires_at, k.key) < (datetime.fromisoformat(at), key))
    rows = list((await conn.execute(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    # the cursor leaves the scope out: it may be a credential, and links end up in logs
    nxt = encode_cursor([rows[-1].expires_at, rows[-1].key]) if more else None
    return Page([_row(r) for r in rows], nxt)
