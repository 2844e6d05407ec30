"""Notifications service: receives the shop's own callbacks, verified and recorded once each.

A sample receiver: the secrets come from ``CONVERGENT_NOTIFICATIONS_SECRETS`` (comma-separated,
so a rotation can list both), read per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import SignatureInvalid
from convergent.store import Store
from convergent.store.types import JSONType, UTCDateTime
from convergent.webhooks.receiver import ReceivedWebhook, webhook_router
from convergent_shop import settings as shop_settings
from convergent_shop.db import metadata

__all__ = ["SECRETS_ENV", "notifications", "router"]

SECRETS_ENV = "CONVERGENT_NOTIFICATIONS_SECRETS"

notifications = sa.Table(
    "shop_notifications",
    metadata,
    sa.Column("webhook_id", sa.String(255), primary_key=True),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("data", JSONType, nullable=True),
    sa.Column("sent_at", UTCDateTime(), nullable=False),  # the sender's webhook-timestamp
)


async def _secrets() -> Sequence[str]:
    found = shop_settings.load().notifications_secrets
    if not found:
        raise SignatureInvalid(f"no secret configured: set {SECRETS_ENV}=whsec_...")
    return found


_INSERT = notifications.insert()  # built once


async def _record(conn: AsyncConnection, hook: ReceivedWebhook) -> None:
    await conn.execute(
        _INSERT,
        {
            "webhook_id": hook.id,
            "event_type": hook.type,
            "data": hook.data,
            "sent_at": hook.timestamp,
        },
    )


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


router = APIRouter(tags=["notifications"])
router.include_router(
    webhook_router(
        "/notifications/webhook",
        store=_store,
        secrets=_secrets,
        consumer="shop.notifications",
        handler=_record,
    )
)


@router.get("/notifications")
async def received(request: Request) -> list[dict[str, Any]]:
    """Callbacks received so far, oldest first."""
    async with _store(request).read() as conn:
        rows = await conn.execute(
            notifications.select().order_by(notifications.c.sent_at, notifications.c.webhook_id)
        )
        return [
            {
                "id": r.webhook_id,
                "type": r.event_type,
                "data": r.data,
                "sent_at": r.sent_at.isoformat(),
            }
            for r in rows
        ]
