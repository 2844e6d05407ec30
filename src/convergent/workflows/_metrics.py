"""Prometheus counters: step retries, and dead-lettered workflow work (an alert for people)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from convergent import metrics

__all__ = ["dead_lettered", "lease_taken_over", "retried", "step_attempt", "waiting_for_version"]

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


_WAITING = Gauge(
    "convergent_workflow_runs_waiting_for_version",
    "Due runs no worker takes: the code version they started with is served by none",
    ["workflow", "version"],
)


def waiting_for_version(counts: dict[tuple[str, str], int], names: set[str]) -> None:
    """Set the waiting runs of the workflows in ``names`` (others are left to their workers)."""
    for labels in list(_WAITING._metrics):  # a version no longer waiting goes back to zero
        if labels[0] in names and (labels[0], labels[1]) not in counts:
            _WAITING.labels(*labels).set(0)
    for (workflow, version), n in counts.items():
        _WAITING.labels(workflow=workflow, version=version).set(n)
