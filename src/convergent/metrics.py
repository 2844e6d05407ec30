"""Every Prometheus metric the engines count, in one place (docs/observability.md lists them).

Counters and histograms are bumped where things happen; backlogs and states are facts of the
database, sampled into gauges by `convergent.telemetry.StoreGauges`. Engine-specific ones that
predate this module stay beside their engine (``convergent_time_to_consistency_seconds`` in
`convergent.outbox.consumer`, ``convergent_workflow_step_retries`` in `convergent.workflows`,
``convergent_webhook_attempts`` in `convergent.webhooks`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONSUMED",
    "CONSUMER_LAG_SECONDS",
    "DEAD_LETTERED",
    "IDEMPOTENCY",
    "LEASE_TAKEOVERS",
    "PUBLISHED",
    "RETRIES",
    "STEP_SECONDS",
    "WEBHOOK_DELIVERIES",
]

#: source: outbox (the relay's publish), consumer, workflow (a step), webhook
RETRIES = Counter(
    "convergent_retries", "Failed attempts scheduled to be tried again, by source", ["source"]
)
DEAD_LETTERED = Counter(
    "convergent_dead_lettered",
    "Items given up on and written to convergent_dead_letters, by source",
    ["source"],
)
#: outcome: completed, retrying, failed
STEP_SECONDS = Histogram(
    "convergent_step_seconds",
    "Duration of workflow step attempts",
    ["workflow", "step", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
#: kind: run (a workflow run whose worker vanished), relay (an outbox partition)
LEASE_TAKEOVERS = Counter(
    "convergent_lease_takeovers",
    "Leases taken over after their holder stopped renewing them",
    ["kind"],
)
#: outcome: new, replay, conflict, mismatch
IDEMPOTENCY = Counter(
    "convergent_idempotency_requests", "Requests with an Idempotency-Key, by outcome", ["outcome"]
)
#: outcome: the webhook sender's (delivered, failed, timeout, error, ...)
WEBHOOK_DELIVERIES = Counter(
    "convergent_webhook_deliveries",
    "Webhook delivery attempts, by endpoint id and outcome",
    ["endpoint", "outcome"],
)
PUBLISHED = Counter(
    "convergent_outbox_published", "Outbox messages acked by the broker, by topic", ["topic"]
)
#: outcome: handled, duplicate, retried, dead_lettered
CONSUMED = Counter(
    "convergent_consumer_messages",
    "Messages settled by a consumer group, by outcome",
    ["group", "topic", "outcome"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "convergent_consumer_lag_seconds",
    "Age of the last message a consumer group fetched (0 when it found nothing waiting)",
    ["group", "topic"],
)
