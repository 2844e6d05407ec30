"""Problem Details for HTTP APIs (RFC 9457): every error convergent answers with comes from here.

``type`` is a URI naming the rule that was broken; we use ``https://convergent.dev/problems/<code>``
where ``<code>`` is the error's stable code (documented in docs/reference/problems.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from convergent.errors import MissingExtra

try:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
except ImportError as exc:
    raise MissingExtra("fastapi", "convergent.http") from exc
from starlette.responses import Response

from convergent import errors

__all__ = [
    "PROBLEM_BASE",
    "PROBLEM_CONTENT_TYPE",
    "Problem",
    "install_problem_handlers",
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
    errors.AlreadyExists: 409,
    errors.InvalidTransition: 409,
    errors.StaleVersion: 412,
    errors.PreconditionRequired: 428,
    errors.PreconditionFailed: 412,
    errors.SchemaViolation: 422,
    errors.UnsafeDestination: 422,
    errors.SignatureInvalid: 401,
    errors.StoreUnavailable: 503,
    errors.ConfigurationError: 500,
}

_TITLES: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
    412: "Precondition Failed",
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

    Covers ``Problem``, convergent's own errors, HTTP errors raised by the framework and FastAPI's
    request validation errors (with the offending fields listed under ``errors``).
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
        return Problem(exc.status_code, code, detail, headers=headers).to_response(request.url.path)

    app.add_exception_handler(Problem, on_problem)
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


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
