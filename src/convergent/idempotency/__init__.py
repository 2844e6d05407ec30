"""Exactly-once requests with ``Idempotency-Key``: the framework-free engine and client helpers.

The ASGI middleware that uses it is ``convergent.http.IdempotencyMiddleware``.
"""

from __future__ import annotations

from convergent.idempotency.client import IdempotentClient, deterministic_key, new_key
from convergent.idempotency.engine import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_RETENTION,
    IdempotencyKeys,
    Lease,
    StoredResponse,
    purge_expired_keys,
)
from convergent.idempotency.keys import canonical_json, fingerprint, parse_key

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
