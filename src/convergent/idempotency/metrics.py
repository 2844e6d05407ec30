"""Prometheus counters for the idempotency layer (exposed by the app's own /metrics)."""

from __future__ import annotations

from opentelemetry import trace
from prometheus_client import Counter

from convergent import tracing
from convergent.metrics import IDEMPOTENCY

__all__ = ["conflicts", "executions", "mismatches", "replays"]


class _Outcome:
    """Its own counter and ``convergent_idempotency_requests{outcome}``, bumped together."""

    def __init__(self, counter: Counter, outcome: str) -> None:
        self.counter = counter
        self.outcome = outcome
        self.labeled = IDEMPOTENCY.labels(outcome)  # looked up once, not per request

    def inc(self, amount: float = 1) -> None:
        self.counter.inc(amount)
        self.labeled.inc(amount)
        if tracing.enabled():  # the request's span says how its key was answered
            trace.get_current_span().set_attribute("convergent.idempotency.outcome", self.outcome)


executions = _Outcome(
    Counter("convergent_idempotency_executions", "Requests with a new key that ran their handler"),
    "new",
)
replays = _Outcome(
    Counter("convergent_idempotency_replays", "Requests answered from a stored response"),
    "replay",
)
conflicts = _Outcome(
    Counter(
        "convergent_idempotency_conflicts", "Requests refused with 409 while their key was in use"
    ),
    "conflict",
)
mismatches = _Outcome(
    Counter(
        "convergent_idempotency_mismatches",
        "Requests refused with 422: key reused for another request",
    ),
    "mismatch",
)
