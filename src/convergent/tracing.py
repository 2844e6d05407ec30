"""OpenTelemetry spans of the engines, through the API only (the SDK is the ``otel`` extra).

With no SDK configured the API hands out non-recording spans; the hot paths (the relay's
per-message publish spans, transactions) check `enabled` first so that they cost one call.
The trace context travels in W3C ``traceparent`` headers: in outbox messages, through the broker,
and in a workflow run's stored arguments (``args["trace"]``), so a run continues the trace of the
request or message that started it.
"""

from __future__ import annotations

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
    "parent_from",
    "record_error",
    "tracer",
]

tracer = trace.get_tracer("convergent")


def enabled() -> bool:
    """True once an SDK tracer provider is installed (spans would be recorded)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, ProxyTracerProvider):
        return False  # nothing installed yet: the API's default
    return not isinstance(provider, NoOpTracerProvider)


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
