"""Alerts for people: a Prometheus counter of dead-lettered workflow work."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["dead_lettered"]

_DEAD = Counter(
    "convergent_workflow_dead_letters",
    "Workflow steps or runs given up on and sent to convergent_dead_letters",
    ["workflow", "step"],
)


def dead_lettered(workflow: str, step: str) -> None:
    _DEAD.labels(workflow=workflow, step=step).inc()
