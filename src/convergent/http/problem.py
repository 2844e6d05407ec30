"""Problem Details for HTTP APIs (RFC 9457): every error convergent answers with comes from here.

``type`` is a URI naming the rule that was broken; we use ``https://convergent.dev/problems/<code>``
where ``<code>`` is the error's stable code (documented in docs/reference/problems.md).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from convergent.errors import MissingExtra

try:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.routing import Match
except ImportError as exc:
    raise MissingExtra("fastapi", "convergent.http") from exc
from opentelemetry import trace
from starlette.responses import Response

from convergent import errors

log = logging.getLogger("convergent.http")

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_CONTENT_TYPE",
    "Problem",
    "current_trace_id",
    "install_problem_handlers",
    "internal_error",
    "problem_for",
    "problem_response",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://convergent.dev/problems/"

# engine error -> HTTP status, decided here at the edge only
_STATUS: dict[type[errors.ConvergentError], int] = {
    errors.InvalidIdempotencyKey: 400,
    errors.IdempotencyKeyMissing: 400,
    errors.IdempotencyKeyMismatch: 422,
    errors.IdempotencyKeyInProgress: 409,
    errors.NotFound: 404,
    errors.RunNotFound: 404,
    errors.RunNotResumable: 409,
    errors.UnknownSchedule: 404,
    errors.AlreadyExists: 409,
    errors.InvalidTransition: 409,
    errors.StaleVersion: 412,
    errors.PreconditionRequired: 428,
    errors.PreconditionFailed: 412,
    errors.SchemaViolation: 422,
    errors.UnsafeDestination: 422,
    errors.SignatureInvalid: 401,
    errors.StoreUnavailable: 503,
    errors.StoreConflict: 503,  # a deadlock's victim: nothing written, try again
    errors.ConfigurationError: 500,
}

_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """An error answer. Raise it in a handler, or build its response with ``to_response``."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str | None = None,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.code

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body

    def to_response(self, instance: str | None = None) -> Response:
        return problem_response(self, instance)


def problem_for(exc: errors.ConvergentError) -> Problem:
    """The Problem an engine error maps to."""
    status = 500
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            status = _STATUS[cls]
            break
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    extensions = {k: v for k, v in exc.details.items() if _jsonable(v)}
    return Problem(status, exc.code, exc.message, headers=headers, **extensions)


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    return Response(
        content=json.dumps(problem.to_dict(instance)).encode(),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def install_problem_handlers(app: Any) -> None:
    """Make a Starlette/FastAPI app answer every error as problem+json.

    Covers ``Problem``, convergent's own errors, HTTP errors raised by the framework (404, 405 with
    ``Allow``), FastAPI's request validation errors (with the offending fields listed under
    ``errors``) and any other exception: a 500 of type ``internal-error`` carrying only a
    ``trace_id``, which the server log line with the traceback carries too.
    """

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return exc.to_response(request.url.path)

    async def on_convergent(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.ConvergentError)
        return problem_for(exc).to_response(request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = _TITLES.get(exc.status_code, "error").lower().replace(" ", "-")
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # every method of the path, not just the first route's
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return Problem(exc.status_code, code, detail, headers=headers).to_response(request.url.path)

    async def on_unhandled(request: Request, exc: Exception) -> Response:
        trace_id = current_trace_id()
        log.error("unhandled error (trace_id=%s)", trace_id, exc_info=exc)
        return internal_error(trace_id).to_response(request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(Exception, on_unhandled)
    app.add_exception_handler(errors.ConvergentError, on_convergent)
    app.add_exception_handler(HTTPException, on_http)
    try:  # FastAPI is optional here: a plain Starlette app has no request validation errors
        from fastapi.exceptions import RequestValidationError
    except ImportError:
        return

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        fields = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        return Problem(
            422, "validation", "the request body is not valid", errors=fields
        ).to_response(request.url.path)

    app.add_exception_handler(RequestValidationError, on_validation)


def _allowed_methods(request: Request) -> str:
    """The methods some route of the app answers at this path (routers may nest: ask them)."""
    routes = getattr(getattr(request.app, "router", None), "routes", [])
    allowed = []
    for method in ("DELETE", "GET", "PATCH", "POST", "PUT"):
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] == Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)


def current_trace_id() -> str:
    """The active OpenTelemetry trace id, or a fresh random one to find the log line by."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    return secrets.token_hex(16)


def internal_error(trace_id: str) -> Problem:
    """The answer to a bug: a stable type and a trace id, never the exception's text."""
    return Problem(
        500,
        "internal-error",
        "the server failed to answer; report the trace_id to its operator",
        trace_id=trace_id,
    )


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
