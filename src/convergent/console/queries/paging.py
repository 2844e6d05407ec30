"""Keyset pagination: a page carries the cursor of its last row, never an OFFSET."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from convergent.errors import ConfigurationError

__all__ = ["InvalidCursor", "Page", "decode_cursor", "encode_cursor", "id_floor"]

T = TypeVar("T")


class InvalidCursor(ConfigurationError):
    """A page link that was edited or is from another list."""

    code = "invalid-cursor"


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None  # None: this is the last page
    extra: dict[str, Any] = field(default_factory=dict)


def encode_cursor(values: list[Any]) -> str:
    """An opaque, URL-safe cursor for the sort key of the last row shown."""
    raw = json.dumps([v.isoformat() if isinstance(v, datetime) else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size:
        raise InvalidCursor("that page link is not valid any more: start from the first page")
    return [str(v) for v in values]


def id_floor(when: datetime) -> uuid.UUID:
    """The smallest UUIDv7 made at ``when``: a time window over ids is a primary-key range."""
    ms = int(when.timestamp() * 1000)
    return uuid.UUID(int=(ms & ((1 << 48) - 1)) << 80)


def parse_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None
