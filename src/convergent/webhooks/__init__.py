"""Webhooks: signed callbacks to consumers (Standard Webhooks) and verified, deduplicated
webhooks in.

Out: `enqueue` in the caller's transaction writes one delivery per matching endpoint; a
`Dispatcher` sends them with retries, and operators manage endpoints, attempts and resends.
In: `verify` checks a signature; `webhook_router` verifies and applies a webhook once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convergent.webhooks.config import DEFAULT_SCHEDULE, WebhookSettings
from convergent.webhooks.endpoints import (
    Endpoint,
    create_endpoint,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
)
from convergent.webhooks.outbound import (
    CHANNEL,
    Attempt,
    enqueue,
    list_attempts,
    recover,
    resend,
)
from convergent.webhooks.safety import ALLOW_HOSTS_ENV, AllowList, check_destination
from convergent.webhooks.signing import new_secret, sign, signature_header, verify

if TYPE_CHECKING:
    from convergent.webhooks.dispatcher import Dispatcher, WebhookEvent
    from convergent.webhooks.receiver import ReceivedWebhook, receive, webhook_router

__all__ = [
    "ALLOW_HOSTS_ENV",
    "CHANNEL",
    "DEFAULT_SCHEDULE",
    "AllowList",
    "Attempt",
    "Dispatcher",
    "Endpoint",
    "ReceivedWebhook",
    "WebhookEvent",
    "WebhookSettings",
    "check_destination",
    "create_endpoint",
    "delete_endpoint",
    "enqueue",
    "get_endpoint",
    "list_attempts",
    "list_endpoints",
    "new_secret",
    "receive",
    "recover",
    "resend",
    "rotate_secret",
    "sign",
    "signature_header",
    "update_endpoint",
    "verify",
    "webhook_router",
]

_RECEIVER = frozenset({"ReceivedWebhook", "receive", "webhook_router"})
_DISPATCHER = frozenset({"Dispatcher", "WebhookEvent"})


def __getattr__(name: str) -> Any:
    # sending needs httpx (the `http` extra) and receiving FastAPI (`fastapi`); writing callbacks
    # in a transaction needs neither
    if name in _RECEIVER:
        from convergent.webhooks import receiver

        return getattr(receiver, name)
    if name in _DISPATCHER:
        from convergent.webhooks import dispatcher

        return getattr(dispatcher, name)
    raise AttributeError(name)
