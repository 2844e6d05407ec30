"""Prometheus counters: step retries, and dead-lettered workflow work (an alert for people)."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, set_span_in_context
from prometheus_client import Counter, Gauge

from convergent import metrics, tracing

__all__ = ["Attempt", "dead_lettered", "lease_taken_over", "retried", "waiting_for_version"]

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


# the labelled histogram of each (workflow, step, outcome): looking a child up by its labels
# takes a lock and builds a tuple, once per step attempt otherwise
_step_seconds: dict[tuple[str, str, str], Any] = {}


class Attempt:
    """One attempt of a step: its latency (``convergent_step_seconds``) and, traced, its span
    (current while the step runs, so what the step emits or calls nests under it)."""

    def __init__(
        self, workflow: str, step: str, attempt: int, key: str, compensating: bool
    ) -> None:
        self.workflow = workflow
        self.step = step
        self.began = time.perf_counter()
        self.span: Span | None = None
        self._token: object = None
        if tracing.enabled():
            self.span = tracing.tracer.start_span(
                f"step {step}",
                attributes={
                    "convergent.workflow": workflow,
                    "convergent.step": step,
                    "convergent.attempt": attempt,
                    "convergent.idempotency_key": key,
                    "convergent.compensation": compensating,
                },
            )
            self._token = otel_context.attach(set_span_in_context(self.span))

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        """``outcome``: completed, reconciled, retrying or failed."""
        labels = (self.workflow, self.step, outcome)
        child = _step_seconds.get(labels)
        if child is None:
            child = _step_seconds[labels] = metrics.STEP_SECONDS.labels(*labels)
        child.observe(time.perf_counter() - self.began)
        if self.span is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self.span.set_attribute("convergent.outcome", outcome)
            if error is not None:
                tracing.record_error(self.span, error)
            self.span.end()


def lease_taken_over(runs: int) -> None:
    metrics.LEASE_TAKEOVERS.labels("run").inc(runs)


_WAITING = Gauge(
    "convergent_workflow_runs_waiting_for_version",
    "Due runs no worker takes: the code version they started with is served by none",
    ["workflow", "version"],
)


_waiting_seen: set[tuple[str, str]] = set()  # labels set so far, to put back to zero


def waiting_for_version(counts: dict[tuple[str, str], int], names: set[str]) -> None:
    """Set the waiting runs of the workflows in ``names`` (others are left to their workers)."""
    for labels in list(_waiting_seen):  # a version no longer waiting goes back to zero
        if labels[0] in names and labels not in counts:
            _WAITING.labels(*labels).set(0)
    for (workflow, version), n in counts.items():
        _WAITING.labels(workflow=workflow, version=version).set(n)
        _waiting_seen.add((workflow, version))
