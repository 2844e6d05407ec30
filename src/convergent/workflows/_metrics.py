"""Prometheus counters: step retries, and dead-lettered workflow work (an alert for people)."""

from __future__ import annotations

from prometheus_client import Counter

from convergent import metrics

__all__ = ["dead_lettered", "lease_taken_over", "retried", "step_attempt"]

_DEAD = Counter(
    "convergent_workflow_dead_letters",
    "Workflow steps or runs given up on and sent to convergent_dead_letters",
    ["workflow", "step"],
)


def dead_lettered(workflow: str, step: str) -> None:
    _DEAD.labels(workflow=workflow, step=step).inc()
    metrics.DEAD_LETTERED.labels("workflow").inc()


_RETRIES = Counter(
    "convergent_workflow_step_retries",
    "Step attempts that failed and were scheduled to run again",
    ["workflow", "step"],
)


def retried(workflow: str, step: str) -> None:
    _RETRIES.labels(workflow=workflow, step=step).inc()
    metrics.RETRIES.labels("workflow").inc()


def step_attempt(workflow: str, step: str, outcome: str, seconds: float) -> None:
    metrics.STEP_SECONDS.labels(workflow, step, outcome).observe(seconds)


def lease_taken_over(runs: int) -> None:
    metrics.LEASE_TAKEOVERS.labels("run").inc(runs)
