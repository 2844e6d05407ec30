"""Prometheus counters for the idempotency layer (exposed by the app's own /metrics)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["conflicts", "executions", "mismatches", "replays"]

executions = Counter(
    "convergent_idempotency_executions", "Requests with a new key that ran their handler"
)
replays = Counter("convergent_idempotency_replays", "Requests answered from a stored response")
conflicts = Counter(
    "convergent_idempotency_conflicts", "Requests refused with 409 while their key was in use"
)
mismatches = Counter(
    "convergent_idempotency_mismatches", "Requests refused with 422: key reused for another request"
)
