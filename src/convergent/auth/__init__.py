"""API keys for the toolkit's own HTTP surfaces (the operator console, admin routes) and for
applications that follow its pattern. See docs/console.md#api-keys.

`create_key`, `revoke_key`, `list_keys` work in a caller's transaction; `verify_key` answers from a
short cache. `require_key` / `require_admin` are FastAPI dependencies (imported lazily, so
workers that only check keys do not load FastAPI).
"""

from __future__ import annotations

from typing import Any

from convergent.auth.keys import (
    ApiKey,
    Principal,
    create_key,
    forget_cached,
    list_keys,
    revoke_key,
    verify_key,
)

__all__ = [
    "ApiKey",
    "Principal",
    "api_key_principal",
    "create_key",
    "forget_cached",
    "list_keys",
    "presented_key",
    "require_admin",
    "require_key",
    "revoke_key",
    "verify_key",
]

_HTTP = frozenset({"api_key_principal", "presented_key", "require_admin", "require_key"})


def __getattr__(name: str) -> Any:
    if name in _HTTP:
        from convergent.auth import dependencies

        return getattr(dependencies, name)
    raise AttributeError(name)
