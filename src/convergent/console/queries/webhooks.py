"""The Webhooks page: endpoints with their health, and an endpoint's recent attempts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.console.queries.paging import Page, decode_cursor, encode_cursor
from convergent.errors import NotFound
from convergent.store.schema import webhook_attempts, webhook_deliveries, webhook_endpoints

__all__ = ["EndpointHealth", "endpoint_attempts", "endpoints_health"]

_RECENT = 20  # attempts per endpoint that make its success rate


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: Any  # the row, without its secrets
    pending: int
    recent: int
    succeeded: int
    last_attempt: Any | None

    @property
    def state(self) -> str:
        if not self.endpoint.enabled:
            return "disabled"
        if self.endpoint.failing_since is not None:
            return "failing"
        return "healthy"


_ENDPOINT_COLUMNS = [c for c in webhook_endpoints.c if c.name != "secrets"]


async def endpoints_health(conn: AsyncConnection) -> list[EndpointHealth]:
    e, d, a = webhook_endpoints.c, webhook_deliveries.c, webhook_attempts.c
    endpoints = (await conn.execute(sa.select(*_ENDPOINT_COLUMNS).order_by(e.created_at))).all()
    out = []
    for row in endpoints:
        pending = await conn.scalar(
            sa.select(sa.func.count()).where(d.endpoint_id == row.id, d.status == "pending")
        )
        recent = (
            await conn.execute(
                sa.select(webhook_attempts)
                .where(a.endpoint_id == row.id)
                .order_by(a.started_at.desc(), a.id.desc())
                .limit(_RECENT)
            )
        ).all()
        out.append(
            EndpointHealth(
                endpoint=row,
                pending=int(pending or 0),
                recent=len(recent),
                succeeded=sum(1 for x in recent if x.outcome == "succeeded"),
                last_attempt=recent[0] if recent else None,
            )
        )
    return out


async def endpoint_attempts(
    conn: AsyncConnection, endpoint_id: uuid.UUID, *, cursor: str | None = None, limit: int = 50
) -> tuple[Any, Page[Any]]:
    """The endpoint (no secrets) and a page of its attempts, newest first."""
    e, a = webhook_endpoints.c, webhook_attempts.c
    endpoint = (
        await conn.execute(sa.select(*_ENDPOINT_COLUMNS).where(e.id == endpoint_id))
    ).first()
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    stmt = (
        sa.select(webhook_attempts)
        .where(a.endpoint_id == endpoint_id)
        .order_by(a.started_at.desc(), a.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        at, last = decode_cursor(cursor, 2)
        stmt = stmt.where(
            sa.tuple_(a.started_at, a.id) < (datetime.fromisoformat(at), uuid.UUID(last))
        )
    rows = list((await conn.execute(stmt)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor([rows[-1].started_at, rows[-1].id]) if more else None
    return endpoint, Page(rows, nxt)
