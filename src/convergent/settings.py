"""Settings read from ``CONVERGENT_*`` environment variables; flags override them."""

from __future__ import annotations

import os

__all__ = ["DEFAULT_BROKER_URL", "DEFAULT_DATABASE_URL", "broker_url", "database_url"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./convergent.db"
DEFAULT_BROKER_URL = "embedded://"


def database_url(override: str | None = None) -> str:
    return override or os.environ.get("CONVERGENT_DATABASE_URL") or DEFAULT_DATABASE_URL


def broker_url(override: str | None = None) -> str:
    return override or os.environ.get("CONVERGENT_BROKER_URL") or DEFAULT_BROKER_URL


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default
