"""Endpoints: where callbacks go, which events they want, and the secrets that sign them."""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import NotFound
from convergent.ids import uuid7
from convergent.store import store_of
from convergent.store.schema import webhook_endpoints
from convergent.webhooks.safety import AllowList, check_destination
from convergent.webhooks.signing import check_secret, new_secret

__all__ = [
    "Endpoint",
    "active_secrets",
    "create_endpoint",
    "delete_endpoint",
    "get_endpoint",
    "list_endpoints",
    "rotate_secret",
    "update_endpoint",
    "wants",
]

_UNSET: Any = object()


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as shown to operators: never its secrets."""

    id: uuid.UUID
    url: str
    description: str
    event_types: list[str] | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> Endpoint:
        return cls(
            id=row.id,
            url=row.url,
            description=row.description,
            event_types=row.event_types,
            enabled=row.enabled,
            disabled_reason=row.disabled_reason,
            failing_since=row.failing_since,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "url": self.url,
            "description": self.description,
            "event_types": self.event_types,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "failing_since": self.failing_since.isoformat() if self.failing_since else None,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def wants(event_types: Sequence[str] | None, event_type: str) -> bool:
    """Does a filter (None: everything; glob patterns like ``order.*``) take ``event_type``?"""
    if event_types is None:
        return True
    return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in event_types)


def active_secrets(stored: list[dict[str, Any]], now: datetime) -> list[str]:
    """The secrets that sign now: the current one plus rotated ones still in their grace."""
    out = []
    for item in stored:
        expires = item.get("expires_at")
        if expires is None or datetime.fromisoformat(expires) > now:
            out.append(str(item["secret"]))
    return out


async def create_endpoint(
    conn: AsyncConnection,
    url: str,
    *,
    event_types: Sequence[str] | None = None,
    description: str = "",
    allow: AllowList | None = None,
    secret: str | None = None,
) -> tuple[Endpoint, str]:
    """Register an endpoint; returns it with its secret, which is never shown again.

    ``secret`` brings your own (``whsec_`` + base64, e.g. when moving from another sender);
    by default a fresh one is made.
    """
    await check_destination(url, allow)
    if secret is not None:
        check_secret(secret)  # refuse a malformed secret now, not at the first delivery
    secret = secret or new_secret()
    endpoint_id = uuid7()
    now = store_of(conn).clock.now()
    await conn.execute(
        webhook_endpoints.insert().values(
            id=endpoint_id,
            url=url,
            description=description,
            event_types=list(event_types) if event_types is not None else None,
            enabled=True,
            secrets=[{"secret": secret, "expires_at": None}],
            created_at=now,
            updated_at=now,
        )
    )
    return await get_endpoint(conn, endpoint_id), secret


async def get_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID) -> Endpoint:
    row = (
        await conn.execute(webhook_endpoints.select().where(webhook_endpoints.c.id == endpoint_id))
    ).one_or_none()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return Endpoint.from_row(row)


async def list_endpoints(conn: AsyncConnection) -> list[Endpoint]:
    rows = await conn.execute(webhook_endpoints.select().order_by(webhook_endpoints.c.id))
    return [Endpoint.from_row(r) for r in rows]


async def update_endpoint(
    conn: AsyncConnection,
    endpoint_id: uuid.UUID,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = _UNSET,
    description: str | None = None,
    enabled: bool | None = None,
    allow: AllowList | None = None,
) -> Endpoint:
    """Change what is given; enabling clears the failure streak and the reason."""
    values: dict[str, Any] = {"updated_at": store_of(conn).clock.now()}
    if url is not None:
        await check_destination(url, allow)
        values["url"] = url
    if event_types is not _UNSET:
        values["event_types"] = list(event_types) if event_types is not None else None
    if description is not None:
        values["description"] = description
    if enabled is not None:
        values["enabled"] = enabled
        values["disabled_reason"] = None if enabled else "disabled by an operator"
        if enabled:
            values["failing_since"] = None
    result = await conn.execute(
        webhook_endpoints.update().where(webhook_endpoints.c.id == endpoint_id).values(**values)
    )
    if not result.rowcount:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return await get_endpoint(conn, endpoint_id)


async def delete_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint with its deliveries and attempts."""
    result = await conn.execute(
        webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id)
    )
    if not result.rowcount:
        raise NotFound(f"no webhook endpoint {endpoint_id}")


async def rotate_secret(conn: AsyncConnection, endpoint_id: uuid.UUID, *, grace: timedelta) -> str:
    """Start signing with a new secret; the old ones keep signing for ``grace``."""
    row = (
        await conn.execute(
            sa.select(webhook_endpoints.c.secrets).where(webhook_endpoints.c.id == endpoint_id)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    now = store_of(conn).clock.now()
    until = (now + grace).isoformat()
    kept = []
    for item in row.secrets:
        expires = item.get("expires_at")
        if expires is None:  # the current secret keeps signing through the grace period
            kept.append({"secret": item["secret"], "expires_at": until})
        elif datetime.fromisoformat(expires) > now:  # an older one keeps its earlier expiry
            kept.append(item)
    secret = new_secret()
    await conn.execute(
        webhook_endpoints.update()
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(secrets=[{"secret": secret, "expires_at": None}, *kept], updated_at=now)
    )
    return secret
