"""FastAPI dependencies: ``Depends(require_key)`` and ``Depends(require_admin)``.

The key comes in ``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``; the Store is the app's
``app.state.store``. A missing or unknown key answers 401, a key without the admin flag on an
admin route 403, both as problem+json (with `install_problem_handlers`).
"""

from __future__ import annotations

from fastapi import Depends
from starlette.requests import HTTPConnection

from convergent.auth.keys import Principal, verify_key
from convergent.errors import ConfigurationError
from convergent.http.problem import Problem
from convergent.store import Store

__all__ = ["api_key_principal", "presented_key", "require_admin", "require_key"]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="convergent"'}


def presented_key(request: HTTPConnection) -> str | None:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-Api-Key``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def _store(request: HTTPConnection) -> Store:
    store = getattr(request.app.state, "store", None)
    if not isinstance(store, Store):
        raise ConfigurationError("require_key needs the app's Store: set app.state.store")
    return store


async def require_key(request: HTTPConnection) -> Principal:
    """The principal of a valid, unrevoked key; 401 otherwise."""
    principal = await verify_key(_store(request), presented_key(request))
    if principal is None:
        raise Problem(
            401,
            "unauthorized",
            "a valid API key is required (Authorization: Bearer <key> or X-Api-Key)",
            headers=_CHALLENGE,
        )
    return principal


async def require_admin(principal: Principal = Depends(require_key)) -> Principal:  # noqa: B008 - FastAPI's idiom
    """A principal whose key is an admin key; 403 for any other valid key."""
    if not principal.admin:
        raise Problem(
            403, "forbidden", f"key {principal.name!r} is not an admin key", title="Forbidden"
        )
    return principal


async def api_key_principal(request: HTTPConnection) -> str | None:
    """`IdempotencyMiddleware`'s ``principal``: the id of the request's valid key, else None.

    Keys are scoped to the key's id, so a rotated secret under the same name is another client.
    """
    principal = await verify_key(_store(request), presented_key(request))
    return None if principal is None else str(principal.id)
