"""The HTTP edge: problem details, idempotency middleware, conditional requests, Prefer."""

from __future__ import annotations

from convergent.errors import MissingExtra

try:  # before any submodule, so each of them is covered too
    import fastapi  # noqa: F401
except ImportError as exc:
    raise MissingExtra("fastapi", "convergent.http") from exc

from convergent.http.guard import RequestGuard
from convergent.http.idempotent import IDEMPOTENCY_RESPONSES, Idempotent
from convergent.http.lifespan import lifespan
from convergent.http.middleware import (
    IdempotencyMiddleware,
    Transaction,
    after_commit,
    header_principal,
    transaction,
)
from convergent.http.problem import Problem, install_problem_handlers

__all__ = [
    "IDEMPOTENCY_RESPONSES",
    "IdempotencyMiddleware",
    "Idempotent",
    "Problem",
    "RequestGuard",
    "Transaction",
    "after_commit",
    "header_principal",
    "install_problem_handlers",
    "lifespan",
    "transaction",
]
