"""Idempotency declared on the route itself: ``Depends(Idempotent())``.

The declaration puts the ``Idempotency-Key`` header and the answers the key can cause (400, 409,
422 as problem+json) into the route's OpenAPI, and `IdempotencyMiddleware(routes=None)` protects
exactly the routes that carry it, found in the application's routes, so a renamed or moved route
keeps its protection. The middleware does the work (it must see the request before the route and
store the answer after it); the dependency only names the route and hands the key to the handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from convergent.errors import ConfigurationError
from convergent.http.openapi import PROBLEM_SCHEMA
from convergent.http.problem import PROBLEM_CONTENT_TYPE

__all__ = ["GUARDED", "IDEMPOTENCY_RESPONSES", "Idempotent", "idempotent_routes"]

#: scope key the middleware sets on a request it handles exactly once
GUARDED = "convergent.idempotency_guarded"

_PROBLEM = {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_SCHEMA}}

#: what a protected route may answer because of its key (RFC 9457 problem details)
IDEMPOTENCY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "The Idempotency-Key header is missing or malformed", "content": _PROBLEM},
    409: {
        "description": "A request with this key is still being processed; retry later",
        "content": _PROBLEM,
    },
    422: {
        "description": "This key was used with a different request (method, path or body)",
        "content": _PROBLEM,
    },
}


class Idempotent:
    """Route dependency: the route runs once per ``Idempotency-Key``; a retry with the same key
    gets the first answer again (``Idempotent-Replayed: true``). The handler receives the key.

    ``@app.post("/payments", responses=IDEMPOTENCY_RESPONSES)`` with a parameter
    ``key: Annotated[str, Depends(Idempotent())]`` (or ``dependencies=[Depends(Idempotent())]``)
    declares it; `IdempotencyMiddleware` with ``routes=None`` enforces it.
    """

    async def __call__(
        self,
        request: Request,
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                description="A unique value per operation (a UUID): the first request with it "
                "runs, a retry with it gets the same answer",
                max_length=255,
            ),
        ],
    ) -> str:
        if not request.scope.get(GUARDED):  # never run such a route unprotected
            raise ConfigurationError(
                f"{request.method} {request.url.path} declares Idempotent() but no "
                "IdempotencyMiddleware guards it: add app.add_middleware(IdempotencyMiddleware, "
                "store=..., principal=...) (routes=None finds the declared routes)"
            )
        return idempotency_key


def _declares(dependant: Dependant) -> bool:
    return any(isinstance(sub.call, Idempotent) or _declares(sub) for sub in dependant.dependencies)


def idempotent_routes(routes: Sequence[Any]) -> list[tuple[str, str]]:
    """(method, path template) of every route declaring ``Depends(Idempotent())``, included
    routers too. Each such route also gets `IDEMPOTENCY_RESPONSES` in its OpenAPI."""
    found: list[tuple[str, str]] = []
    for context in iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        dependant = getattr(context, "dependant", None) or route.dependant
        if not _declares(dependant):
            continue
        for method in sorted(context.methods or ()):
            found.append((method, context.path_format or route.path_format))
        # the route, and its copy as included under a prefix (which OpenAPI reads)
        for responses in {id(r): r for r in (route.responses, _responses(context))}.values():
            for status, answer in IDEMPOTENCY_RESPONSES.items():
                responses.setdefault(status, answer)
    return found


def _responses(context: Any) -> dict[int | str, Any]:
    found = getattr(context, "responses", None)
    return found if isinstance(found, dict) else {}
