"""An ASGI middleware that traces each HTTP request (a SERVER span, OpenTelemetry semantic
conventions), continuing the caller's ``traceparent``. Without an SDK, or under a framework that
traces requests itself, it only passes through."""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from convergent import tracing

__all__ = ["TracingMiddleware"]

Scope = dict[str, Any]
Receive = Any
Send = Any


class TracingMiddleware:
    """``app.add_middleware(TracingMiddleware)`` (added last, so it wraps the others)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.enabled() or tracing.in_trace():
            # untraced, or the framework traces requests already (FastAPI >= 0.16x natively,
            # opentelemetry-instrumentation-asgi): its span is the request's, ours would split it
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET")
        attributes = {
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
        }
        if "user-agent" in headers:
            attributes["user_agent.original"] = headers["user-agent"]
        with tracing.tracer.start_as_current_span(
            method,
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:

            async def send_traced(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")
