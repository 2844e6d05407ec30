"""Prometheus counters: step retries, and dead-lettered workflow work (an alert for people)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["dead_lettered", "retried"]

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
