"""Prometheus metrics of webhook delivery (registered once, on the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ATTEMPTS", "ATTEMPT_SECONDS", "EVENTS"]

ATTEMPTS = Counter(
    "convergent_webhook_attempts", "Webhook delivery attempts, by outcome", ["outcome"]
)
ATTEMPT_SECONDS = Histogram(
    "convergent_webhook_attempt_seconds", "Duration of webhook delivery attempts"
)
EVENTS = Counter(
    "convergent_webhook_events",
    "Operational webhook events (delivery exhausted, endpoint disabled)",
    ["kind"],
)
