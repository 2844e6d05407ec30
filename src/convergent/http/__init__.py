"""The HTTP edge: problem details, idempotency middleware, conditional requests, Prefer."""

from __future__ import annotations

from convergent.http.middleware import (
    IdempotencyMiddleware,
    Transaction,
    after_commit,
    header_principal,
    transaction,
)

__all__ = [
    "IdempotencyMiddleware",
    "Transaction",
    "after_commit",
    "header_principal",
    "transaction",
]
