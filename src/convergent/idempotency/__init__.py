"""Exactly-once requests with ``Idempotency-Key``: the framework-free engine and client helpers.

The ASGI middleware that uses it is ``convergent.http.IdempotencyMiddleware``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convergent.idempotency.engine import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_RETENTION,
    IdempotencyKeys,
    Lease,
    StoredResponse,
    purge_expired_keys,
)
from convergent.idempotency.keys import (
    canonical_json,
    deterministic_key,
    fingerprint,
    new_key,
    parse_key,
)

if TYPE_CHECKING:
    from convergent.idempotency.client import IdempotentClient

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_RETENTION",
    "IdempotencyKeys",
    "IdempotentClient",
    "Lease",
    "StoredResponse",
    "canonical_json",
    "deterministic_key",
    "fingerprint",
    "new_key",
    "parse_key",
    "purge_expired_keys",
]


def __getattr__(name: str) -> Any:
    # the client needs httpx (the `http` extra); the engine does not
    if name == "IdempotentClient":
        from convergent.idempotency.client import IdempotentClient

        return IdempotentClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
