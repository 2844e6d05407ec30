"""``Prefer: wait=N`` (RFC 7240) and the async request-reply answer (202 + Location).

A route has an SLA: it waits for a final state up to min(N, limit) seconds, then answers with the
final representation or ``202 Accepted`` and where to look. ``Preference-Applied`` says when
the wait preference was honoured.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from convergent.errors import MissingExtra

try:
    from starlette.requests import Request
except ImportError as exc:
    raise MissingExtra("fastapi", "convergent.http") from exc

__all__ = ["accepted_headers", "parse_prefer", "preference_applied", "requested_wait"]


def parse_prefer(values: Iterable[str]) -> dict[str, str | None]:
    """Preferences of one or more Prefer header values; the first of a name wins."""
    found: dict[str, str | None] = {}
    for value in values:
        for item in value.split(","):
            token = item.split(";", 1)[0].strip()
            if not token:
                continue
            name, sep, raw = token.partition("=")
            key = name.strip().lower()
            if key and key not in found:
                found[key] = raw.strip().strip('"') if sep else None
    return found


def requested_wait(request: Request, *, limit: float) -> float | None:
    """Seconds to wait: min(N, limit) for ``Prefer: wait=N``; None when no wait was asked for."""
    raw = parse_prefer(request.headers.getlist("prefer")).get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, limit)


def preference_applied(wait: float) -> dict[str, str]:
    return {"Preference-Applied": f"wait={math.ceil(wait)}"}


def accepted_headers(location: str, retry_after: float = 1.0) -> dict[str, str]:
    """Headers of a 202: where the status lives and when to look again."""
    return {"Location": location, "Retry-After": str(max(1, math.ceil(retry_after)))}
