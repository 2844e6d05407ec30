"""Jinja filters: times as ages, values shortened, JSON pretty-printed (all escaped by Jinja)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jinja2

__all__ = ["install"]


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds / size:.0f}{unit}"
            break
    else:
        text = f"{seconds:.0f}s"
    return f"in {text}" if future else f"{text} ago"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def short(value: Any, width: int = 80) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, sort_keys=True)


def install(env: jinja2.Environment) -> None:
    env.filters.update(ago=ago, when=when, short=short, pretty=pretty)
