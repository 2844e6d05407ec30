"""Classify HTTP responses for retries: 408, 429 and 5xx are transient, other 4xx permanent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from convergent.errors import PermanentError, TransientError
from convergent.retry import parse_retry_after

__all__ = ["parse_retry_after", "raise_for_status"]

TRANSIENT_STATUSES = frozenset({408, 425, 429})


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


def raise_for_status(response: _Response, *, now: datetime | None = None) -> None:
    """Return on 1xx-3xx; raise `TransientError` (with ``retry_after``) or `PermanentError`."""
    code = response.status_code
    if code < 400:
        return
    if code in TRANSIENT_STATUSES or code >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
        raise TransientError(f"HTTP {code}", retry_after=retry_after, status=code)
    raise PermanentError(f"HTTP {code}", status=code)
