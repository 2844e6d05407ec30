"""The Idempotency-Key header and the request fingerprint.

The header is an RFC 8941 sf-string (``"abc"``); the bare form (``abc``) names the same key.
A fingerprint is the sha256 of method, path (with query) and the canonical JSON body, so key order
and whitespace in the body do not make two requests different.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from convergent.errors import IdempotencyKeyMissing, InvalidIdempotencyKey
from convergent.ids import new_id

__all__ = [
    "MAX_KEY_LENGTH",
    "InvalidBody",
    "canonical_json",
    "deterministic_key",
    "fingerprint",
    "new_key",
    "parse_key",
]

MAX_KEY_LENGTH = 255


class InvalidBody(ValueError):
    """The body claims to be JSON but does not parse."""


def parse_key(values: Sequence[str]) -> str:
    """The key from the header's values (one expected); raise if missing or malformed."""
    if not values:
        raise IdempotencyKeyMissing("this route requires an Idempotency-Key header")
    if len(values) > 1:
        raise InvalidIdempotencyKey("send exactly one Idempotency-Key header")
    raw = values[0].strip(" \t")
    key = _unquote(raw) if raw.startswith('"') else raw
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(f"the key must be 1 to {MAX_KEY_LENGTH} characters long")
    if not (key.isascii() and key.isprintable()):  # " " to "~"
        raise InvalidIdempotencyKey("the key must be printable ASCII")
    return key


def _unquote(raw: str) -> str:
    """Decode an RFC 8941 sf-string: only ``\\"`` and ``\\\\`` escapes are allowed."""
    if len(raw) < 2 or not raw.endswith('"'):
        raise InvalidIdempotencyKey("an unterminated quoted Idempotency-Key")
    out: list[str] = []
    chars = iter(raw[1:-1])
    for ch in chars:
        if ch == "\\":
            escaped = next(chars, "")
            if escaped not in ('"', "\\"):
                raise InvalidIdempotencyKey("a quoted key may only escape '\"' and '\\'")
            out.append(escaped)
        elif ch == '"':
            raise InvalidIdempotencyKey("an unescaped quote inside a quoted Idempotency-Key")
        else:
            out.append(ch)
    return "".join(out)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: object) -> str:
    """One spelling per JSON value: sorted keys, no whitespace."""
    return _CANONICAL.encode(value)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def fingerprint(method: str, target: str, content_type: str, body: bytes) -> str:
    """sha256 hex of the request as far as idempotency cares; raise InvalidBody on bad JSON."""
    if body and _is_json(content_type):
        try:
            body = canonical_json(json.loads(body)).encode()
        except (ValueError, UnicodeError, RecursionError) as exc:  # too deep: RecursionError
            raise InvalidBody(f"the body is not valid JSON: {exc}") from None
    verb, path = method.upper().encode(), target.encode()
    return hashlib.sha256(  # each part length-prefixed: no ambiguous joins
        b"".join(
            (
                len(verb).to_bytes(8, "big"),
                verb,
                len(path).to_bytes(8, "big"),
                path,
                len(body).to_bytes(8, "big"),
                body,
            )
        )
    ).hexdigest()


def new_key() -> str:
    """A fresh key (UUIDv7): make it once per operation and keep it across retries."""
    return new_id()


def deterministic_key(namespace: str, client: str, payload: object) -> str:
    """The same key for the same (namespace, client, JSON payload), in any process."""
    text = canonical_json([namespace, client, payload])
    return f"{namespace}:{hashlib.sha256(text.encode()).hexdigest()}"[:255]
