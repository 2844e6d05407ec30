"""OpenTelemetry spans of the engines, through the API only (the SDK is the ``otel`` extra).

With no SDK configured the API hands out non-recording spans; the hot paths (the relay's
per-message publish spans, transactions) check `enabled` first so that they cost one call.
The trace context travels in W3C ``traceparent`` headers: in outbox messages, through the broker,
and in a workflow run's stored arguments (``args["trace"]``), so a run continues the trace of the
request or message that started it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
)

__all__ = [
    "SpanKind",
    "Status",
    "StatusCode",
    "carrier",
    "enabled",
    "in_trace",
    "parent_from",
    "record_error",
    "refresh",
    "tracer",
]

tracer = trace.get_tracer("convergent")


_installed = False
_next_look = 0.0


def enabled() -> bool:
    """True once an SDK tracer provider is installed (spans would be recorded).

    Asking the API costs about 3 µs, so the answer "no" is kept for a second (a provider is
    installed once, at start-up: `convergent.telemetry.tracing` calls `refresh` after it)."""
    global _installed, _next_look
    if _installed:
        return True
    now = time.monotonic()
    if now < _next_look:
        return False
    _next_look = now + 1.0
    provider = trace.get_tracer_provider()
    _installed = not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)
    return _installed


def refresh() -> None:
    """Look again at the next `enabled` (a tracer provider was just installed)."""
    global _next_look
    _next_look = 0.0


def in_trace() -> bool:
    """Is a recording span current (is there a trace to add to)?"""
    return trace.get_current_span().is_recording()


def carrier() -> dict[str, str]:
    """The current trace context as headers (empty outside a recording span)."""
    headers: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)
    return headers


def parent_from(headers: Mapping[str, Any] | None) -> otel_context.Context | None:
    """The context ``headers`` carry (``traceparent``), for a span that continues it."""
    if not headers or "traceparent" not in headers:
        return None
    return propagate.extract({k: str(v) for k, v in headers.items()})


def record_error(span: trace.Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
