"""Receiving webhooks: verify the signature, then apply the effect once per ``webhook-id``.

The inbox row and the receiver's effect commit in one transaction, so a redelivered webhook
(the sender's retry, a resend) is acknowledged without a second effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from convergent.errors import MissingExtra

try:
    from fastapi import APIRouter, Request
except ImportError as exc:
    raise MissingExtra("fastapi", "the webhook receiver") from exc
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store import Store
from convergent.store.inbox import record_once
from convergent.webhooks.signing import verify

__all__ = ["ReceivedWebhook", "SecretSource", "receive", "webhook_router"]

#: the secrets to accept: fixed, or looked up per request (so rotation needs no restart)
SecretSource = Sequence[str] | Callable[[], Awaitable[Sequence[str]]]
Handler = Callable[[AsyncConnection, "ReceivedWebhook"], Awaitable[None]]


@dataclass(frozen=True)
class ReceivedWebhook:
    id: str
    timestamp: datetime
    type: str
    data: Any
    payload: Any


async def _secrets(source: SecretSource) -> Sequence[str]:
    if callable(source):
        return await source()
    return source


async def receive(
    request: Request, secrets: SecretSource, *, tolerance: float = 300, now: datetime | None = None
) -> ReceivedWebhook:
    """Verify the request (raises `SignatureInvalid`) and return what it carries."""
    body = await request.body()
    payload = verify(await _secrets(secrets), request.headers, body, tolerance, now)
    stamp = int(request.headers["webhook-timestamp"])
    kind = payload.get("type", "") if isinstance(payload, dict) else ""
    data = payload.get("data") if isinstance(payload, dict) else None
    return ReceivedWebhook(
        id=request.headers["webhook-id"],
        timestamp=datetime.fromtimestamp(stamp, UTC),
        type=str(kind),
        data=data,
        payload=payload,
    )


def webhook_router(
    path: str,
    *,
    store: Store | Callable[[Request], Store],
    secrets: SecretSource,
    consumer: str,
    handler: Handler,
    tolerance: float = 300,
    **route_options: Any,
) -> APIRouter:
    """A router with one POST route that verifies, dedupes and calls ``handler(conn, hook)``.

    ``handler`` runs in the transaction that records the ``webhook-id`` for ``consumer``; a
    duplicate is answered 200 with ``{"duplicate": true}`` and the handler is not called.
    """
    router = APIRouter()

    @router.post(path, **route_options)
    async def receive_webhook(request: Request) -> dict[str, Any]:
        the_store = store(request) if callable(store) else store
        now = the_store.clock.now()
        hook = await receive(request, secrets, tolerance=tolerance, now=now)
        async with the_store.begin() as conn:
            first = await record_once(conn, consumer, hook.id, now)
            if first:
                await handler(conn, hook)
        return {"id": hook.id, "duplicate": not first}

    return router
