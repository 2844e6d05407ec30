"""Prometheus counters: step retries, and dead-lettered workflow work (an alert for people)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = ["dead_lettered", "retried", "waiting_for_version"]

_DEAD = Counter(
    "convergent_workflow_dead_letters",
    "Workflow steps or runs given up on and sent to convergent_dead_letters",
    ["workflow", "step"],
)


def dead_lettered(workflow: str, step: str) -> None:
    _DEAD.labels(workflow=workflow, step=step).inc()


_RETRIES = Counter(
    "convergent_workflow_step_retries",
    "Step attempts that failed and were scheduled to run again",
    ["workflow", "step"],
)


def retried(workflow: str, step: str) -> None:
    _RETRIES.labels(workflow=workflow, step=step).inc()


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
