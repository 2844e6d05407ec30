"""ASGI middleware that refuses, before any handler runs, requests no handler should see.

Each refusal is problem+json: a body over the size limit (413), a body that is not JSON (415),
JSON nested deeper than a limit or holding what no database column can store (NUL, lone UTF-16
surrogates) and NUL in the path or query (422), JSON that does not parse (400). PostgreSQL
rejects NUL in text and SQLite stores it, so refusing it here makes both databases answer alike.
Put it outermost (add it last), so every other middleware sees only requests that passed.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convergent import settings
from convergent.http.problem import Problem

__all__ = ["RequestGuard", "check_json"]

_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# a JSON string, then a NUL escape preceded by an even number of backslashes
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _invalid(detail: str, field: str = "") -> Problem:
    return Problem(
        422,
        "validation",
        "the request is not valid",
        errors=[{"field": field, "message": detail}],
    )


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def check_json(body: bytes, *, max_depth: int) -> None:
    """Raise a `Problem` unless ``body`` is JSON a handler and any database column can take."""
    brackets = _STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    if brackets and max(itertools.accumulate(_DEPTH[b] for b in brackets)) > max_depth:
        raise _invalid(f"JSON nested deeper than {max_depth} levels")
    if _NUL.search(body):
        raise _invalid("text must not contain the NUL character (\\u0000)")
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, "invalid-json", f"the body is not valid JSON: {exc}") from None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise _invalid("text must be valid Unicode (no lone surrogates)") from None


class RequestGuard:
    """Refuses oversized, non-JSON and unstorable requests with problem+json.

    ``max_body`` (bytes; default ``CONVERGENT_HTTP_MAX_BODY``) applies to every route;
    ``media_types`` are the bodies accepted (``+json`` suffixes count as JSON); paths under
    ``other_bodies`` (e.g. an HTML console posting forms) skip the media-type and JSON checks.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int | None = None,
        max_depth: int | None = None,
        other_bodies: Sequence[str] = (),
    ) -> None:
        cfg = settings.load()
        self.app = app
        self.max_body = cfg.http_max_body if max_body is None else max_body
        self.max_depth = cfg.http_max_json_depth if max_depth is None else max_depth
        self.other_bodies = tuple(other_bodies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            receive = await self._check(scope, receive)
        except Problem as problem:
            await problem.to_response(scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check(self, scope: Scope, receive: Receive) -> Receive:
        path: str = scope["path"]
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            raise _invalid("the URL must not contain the NUL character", "path")
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            raise _too_large(self.max_body)
        if scope["method"] not in _WITH_BODY and not declared.strip(b"0"):
            return receive
        body, disconnected = await _read(receive, self.max_body)
        if not body or path.startswith(self.other_bodies):
            return _replay(body, receive, disconnected)
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json" and not media.endswith(b"+json"):
            raise Problem(415, "unsupported-media-type", "send the body as application/json")
        check_json(body, max_depth=self.max_depth)
        return _replay(body, receive, disconnected)


def _too_large(limit: int) -> Problem:
    return Problem(413, "content-too-large", f"the body may have at most {limit} bytes")


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive, disconnected: bool) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
