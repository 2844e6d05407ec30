"""Field types that take from JSON only what the OpenAPI document says they take.

Pydantic's lax mode turns ``0`` into 1970-01-01 and ``"5"`` into 5; a client sending those has a
bug, and the document (a string of format date-time, an integer) says so: refuse them with 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

__all__ = ["JsonDatetime", "JsonInt"]


def _text_or_datetime(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("a date-time is an RFC 3339 string, e.g. 2030-01-01T19:00:00Z")
    return value


def _a_number(value: Any) -> Any:
    if isinstance(value, str | bool):
        raise ValueError("an integer is a JSON number, not a string")
    return value


JsonDatetime = Annotated[AwareDatetime, BeforeValidator(_text_or_datetime)]
JsonInt = Annotated[int, BeforeValidator(_a_number)]
