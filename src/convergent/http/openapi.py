"""Make an app's OpenAPI document declare what the API really answers: problem+json errors, the
protocol-level statuses (401, 405, 413, 415, 500, 503 ...) and the headers convergent sends.

FastAPI documents a route's success and its 422 only; everything `install_problem_handlers`,
`RequestGuard`, `IdempotencyMiddleware` and the conditional-request helpers add is declared here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from convergent.http.problem import _TITLES, PROBLEM_CONTENT_TYPE

__all__ = ["PROBLEM_SCHEMA", "declare_protocol", "header_parameters"]

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; extensions (errors, trace_id ...) may follow.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status"],
    "additionalProperties": True,
}

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
#: every operation may answer these (guard, auth, framework, bugs, database outages)
_EVERYWHERE = (400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 428, 500, 503)
_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {"description": "The representation's version (If-Match / If-None-Match)."},
    "Location": {"description": "Where the resource is (or where to poll for it)."},
    "Retry-After": {"description": "Seconds to wait before retrying."},
    "Preference-Applied": {"description": "The Prefer: wait that was honoured."},
    "Idempotent-Replayed": {"description": "true when the answer replays a stored one."},
    "Allow": {"description": "The methods the resource supports (405)."},
    "WWW-Authenticate": {"description": "How to authenticate (401)."},
}


#: a token (a quoted sf-string works too); what else a header takes, the route checks
_HEADER_SCHEMAS = {
    "Idempotency-Key": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
    },
}


def header_parameters(*names: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that a middleware or helper reads headers of (the handler
    never sees them itself), e.g. ``header_parameters("Idempotency-Key")``. A missing
    precondition answers 428, not 400/422, so declare If-Match with ``required=False``."""
    return {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": required,
                "schema": _HEADER_SCHEMAS.get(name, {"type": "string"}),
            }
            for name in names
        ]
    }


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {n: {**_HEADERS[n], "schema": {"type": "string"}} for n in names}


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": _TITLES.get(status, "Error"),
        "headers": _headers(("Retry-After", "Allow", "WWW-Authenticate", "Idempotent-Replayed")),
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def declare_protocol(app: Any) -> None:
    """Wrap ``app.openapi`` so its document declares every problem answer and header.

    A route declaring 200, 201 or 202 is declared to answer all three (``Prefer: wait`` turns a
    202 into a 201 or 200 once the work is done), with the same body.
    """
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return dict(app.openapi_schema)
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        for schema_name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(schema_name, None)
        for item in document.get("paths", {}).values():
            for method, operation in item.items():
                if method in _METHODS:
                    _declare(operation)
        app.openapi_schema = document
        return document

    app.openapi = openapi


def _declare(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    successes = [s for s in responses if s in ("200", "201", "202")]
    if successes:
        template = responses[successes[0]]
        for status in ("200", "201", "202"):
            responses.setdefault(status, dict(template))
    for status, answer in list(responses.items()):
        if status.startswith(("2", "3")):
            names = ("ETag", "Location", "Retry-After", "Preference-Applied", "Idempotent-Replayed")
            answer["headers"] = {**_headers(names), **answer.get("headers", {})}
    responses.setdefault("304", {"description": "Not Modified", "headers": _headers(["ETag"])})
    for code in _EVERYWHERE:
        responses[str(code)] = _problem(code)
