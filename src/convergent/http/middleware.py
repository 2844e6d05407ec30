"""ASGI middleware for ``Idempotency-Key`` (IETF draft -07, Stripe's behaviour).

On a configured route the middleware locks the key, opens ONE write transaction, runs the app with
it (handlers reach it through ``transaction(request)`` or the ``Transaction`` dependency), stores
the response in that same transaction, commits, and only then sends the response. A replay gets the
stored status, body and a few headers plus ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import inspect
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from convergent.errors import MissingExtra

try:
    from fastapi import Depends
except ImportError as exc:
    raise MissingExtra("fastapi", "convergent.http") from exc
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convergent.errors import (
    ConfigurationError,
    IdempotencyError,
    IdempotencyKeyInProgress,
    IdempotencyKeyMismatch,
    StoreUnavailable,
)
from convergent.faults import fault_point, register
from convergent.http.idempotent import GUARDED, idempotent_routes
from convergent.http.problem import PROBLEM_CONTENT_TYPE, Problem, problem_for
from convergent.idempotency import metrics
from convergent.idempotency.engine import IdempotencyKeys, Lease, StoredResponse
from convergent.idempotency.keys import InvalidBody, fingerprint, parse_key
from convergent.store import Store

__all__ = [
    "REPLAYED_HEADERS",
    "IdempotencyMiddleware",
    "Principal",
    "Transaction",
    "after_commit",
    "header_principal",
    "transaction",
]

log = logging.getLogger(__name__)

AFTER_LOCK = register(
    "idempotency.after_lock_before_handler", "the key is locked; the handler has not run"
)
BEFORE_COMMIT = register(
    "idempotency.after_handler_before_commit",
    "the handler ran and its response is stored, in a transaction not yet committed",
)
BEFORE_RESPONSE = register(
    "idempotency.after_commit_before_response",
    "effect and stored response are committed; the client has not been answered",
)

#: response headers worth replaying; never Set-Cookie or Date
REPLAYED_HEADERS = ("content-type", "location", "etag", "preference-applied", "retry-after")
#: problem types that mean "rejected before the handler ran" (never stored, like Stripe)
_NOT_STORED = ("/validation", "/invalid-json")
_TX = "convergent.transaction"
_STORE = "convergent.store"
_AFTER = "convergent.after_commit"

Principal = Callable[[HTTPConnection], str | Awaitable[str | None] | None]


def header_principal(name: str) -> Principal:
    """Identify the client by a request header (e.g. ``X-Api-Key``)."""

    def principal(request: HTTPConnection) -> str | None:
        return request.headers.get(name) or None

    return principal


@asynccontextmanager
async def transaction(request: HTTPConnection) -> AsyncIterator[AsyncConnection]:
    """The request's write transaction: the middleware's on an idempotent route, else a new one.

    Write a handler once with ``async with transaction(request) as conn:``; on an idempotent
    route the middleware commits (with the stored response), elsewhere the block does.
    """
    conn = request.scope.get(_TX)
    if conn is not None:
        yield conn
        return
    store = request.scope.get(_STORE) or getattr(request.app.state, "store", None)
    if not isinstance(store, Store):
        raise ConfigurationError(
            "no Store for this request: add IdempotencyMiddleware or set app.state.store"
        )
    async with store.begin() as conn:
        yield conn


def after_commit(request: HTTPConnection, answer: Callable[[], Awaitable[Response | None]]) -> bool:
    """Run ``answer`` once the request's transaction has committed; False outside the middleware.

    A Response it returns is sent instead of the handler's, but the handler's answer is the one
    stored for replays. This is how ``Prefer: wait`` waits for work that can only start once the
    request's writes are visible, without holding the transaction (or SQLite's write lock) open.
    Outside an idempotent route the handler's own block has already committed: call ``answer``
    directly.
    """
    if request.scope.get(_TX) is None:
        return False
    request.scope.setdefault(_AFTER, []).append(answer)
    return True


async def _transaction_dependency(request: Request) -> AsyncIterator[AsyncConnection]:
    async with transaction(request) as conn:
        yield conn


#: FastAPI dependency; scope="function" commits before the response is sent
Transaction = Annotated[AsyncConnection, Depends(_transaction_dependency, scope="function")]


def _patterns(routes: Iterable[tuple[str, str]]) -> list[tuple[str, re.Pattern[str]]]:
    return [(m.upper(), _route_pattern(p)) for m, p in routes]


def _route_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}/?$")


class IdempotencyMiddleware:
    """Exactly-once handling for ``routes`` (method, path template), e.g. ``("POST", "/orders")``.

    ``principal`` names the client from the request; keys are scoped to it, and a protected
    request without one is refused with 401. Lock timeout and retention: see ``IdempotencyKeys``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store,
        routes: Iterable[tuple[str, str]] | None = None,
        principal: Principal,
        lock_timeout: float | None = None,
        retention: float | None = None,
        replayed_headers: Sequence[str] = REPLAYED_HEADERS,
        max_body: int = 1 << 20,
    ) -> None:
        self.app = app
        self.store = store
        self.keys = IdempotencyKeys(store, lock_timeout=lock_timeout, retention=retention)
        self.renewals: dict[asyncio.AbstractEventLoop, _Renewals] = {}  # one per event loop
        # None: the routes that declare Depends(Idempotent()), found at the first request
        self.routes = None if routes is None else _patterns(routes)
        self.principal = principal
        self.replayed_headers = frozenset(h.lower() for h in replayed_headers)
        self.max_body = max_body  # bodies are buffered to fingerprint and replay them

    def protects(self, method: str, path: str) -> bool:
        return any(m == method and p.match(path) for m, p in self.routes or ())

    def _discover(self, scope: Scope) -> None:
        app = scope.get("app")
        self.routes = _patterns(idempotent_routes(getattr(app, "routes", ())))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_STORE] = self.store
        if self.routes is None:
            self._discover(scope)
        if not self.protects(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            await self._guarded(scope, receive, send)
        except Problem as problem:
            await problem.to_response(scope["path"])(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = HTTPConnection(scope)
        who = self.principal(request)
        client = await who if inspect.isawaitable(who) else who
        if not client:
            raise Problem(401, "unauthenticated", "identify the client to use this route")
        try:
            key = parse_key(request.headers.getlist("idempotency-key"))
        except IdempotencyError as exc:
            raise problem_for(exc) from None
        body = await _read_body(receive, self.max_body)
        target = scope["path"] + ("?" + qs.decode() if (qs := scope.get("query_string")) else "")
        try:
            fp = fingerprint(scope["method"], target, request.headers.get("content-type", ""), body)
        except InvalidBody as exc:
            raise Problem(400, "invalid-json", str(exc)) from None
        scope_id = hashlib.sha256(client.encode()).hexdigest()  # never store the credential
        claim = (scope_id, key, fp)
        if self.keys.claims_on_transaction:  # the claim goes on the handler's connection
            await self._execute(scope, _replay_body(body, receive), send, claim)
            return
        found = await self._acquire(claim, None)
        if isinstance(found, StoredResponse):
            await _send_replay(send, found)
            return
        await self._execute(scope, _replay_body(body, receive), send, found)

    async def _acquire(
        self, claim: tuple[str, str, str], conn: AsyncConnection | None
    ) -> Lease | StoredResponse:
        try:
            return await self.keys.acquire(*claim, conn=conn)
        except IdempotencyKeyMismatch as exc:
            metrics.mismatches.inc()
            raise problem_for(exc) from None
        except IdempotencyKeyInProgress as exc:
            metrics.conflicts.inc()
            raise problem_for(exc) from None
        except StoreUnavailable as exc:
            raise problem_for(exc) from None

    async def _execute(
        self, scope: Scope, receive: Receive, send: Send, claim: Lease | tuple[str, str, str]
    ) -> None:
        """Run the handler under the lease ``claim``, or under the key ``claim`` names, locked
        first on the transaction's own connection (committed at once: its BEGIN comes later)."""
        lease = claim if isinstance(claim, Lease) else None
        captured = _Captured()
        try:
            async with self.store.begin() as conn:
                if lease is None:
                    assert not isinstance(claim, Lease)
                    found = await self._acquire(claim, conn)
                    if isinstance(found, StoredResponse):
                        raise _Replay(found)
                    lease = found
                fault_point(AFTER_LOCK)
                renewals = self._renewals()
                held = renewals.hold(lease)
                scope[_TX] = conn
                scope[GUARDED] = True
                try:
                    await self.app(scope, receive, captured.send)
                finally:  # complete() checks the lease is still ours, in this transaction
                    await renewals.release(held)
                response = captured.response(self.replayed_headers)
                if not worth_storing(response):
                    raise _RollBack
                try:
                    await self.keys.complete(conn, lease, response)
                except IdempotencyKeyInProgress as exc:
                    raise _LockLost(exc) from None
                fault_point(BEFORE_COMMIT)
        except _Replay as replay:
            await _send_replay(send, replay.response)
            return
        except _RollBack:
            await self._release(lease)
            await captured.send_to(send)
            return
        except _LockLost as lost:  # our lock expired and another request took the key
            metrics.conflicts.inc()
            raise problem_for(lost.error) from None
        except StoreUnavailable as exc:
            await self._release(lease)
            raise problem_for(exc) from None
        except BaseException:
            await asyncio.shield(self._release(lease))
            raise
        finally:
            scope.pop(_TX, None)
        fault_point(BEFORE_RESPONSE)
        metrics.executions.inc()
        for answer in scope.pop(_AFTER, []):
            replacement = await answer()
            if replacement is not None:
                await replacement(scope, receive, send)
                return
        await captured.send_to(send)

    def _renewals(self) -> _Renewals:
        loop = asyncio.get_running_loop()
        renewals = self.renewals.get(loop)
        if renewals is None:
            for other in list(self.renewals):  # a loop that ended took its requests with it
                if other.is_closed():
                    self.renewals.pop(other, None)
            renewals = self.renewals[loop] = _Renewals(self.keys, loop)
        return renewals

    async def _release(self, lease: Lease | None) -> None:
        if lease is None:  # the key was never ours
            return
        with contextlib.suppress(StoreUnavailable):  # the lock expires on its own
            await self.keys.release(lease)


def worth_storing(response: StoredResponse) -> bool:
    """5xx answers and requests that failed validation leave the key free for a retry."""
    if response.status >= 500:
        return False
    if response.status in (400, 422) and PROBLEM_CONTENT_TYPE in dict(response.headers).get(
        "content-type", ""
    ):
        try:
            kind = json.loads(response.body).get("type", "")
        except (ValueError, AttributeError):
            return True
        return not str(kind).endswith(_NOT_STORED)
    return True


class _Held:
    """A request running under its lease (``since``: when it locked, on the monotonic clock)."""

    __slots__ = ("context", "lease", "since", "task")

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.since = time.monotonic()
        self.context = contextvars.copy_context()  # its renewals belong to its request
        self.task: asyncio.Task[None] | None = None


class _Renewals:
    """Keeps the locks of the requests running under one middleware on one event loop: a live
    request is never taken over.

    Most requests end long before their first renewal is due, so a request only joins a dict;
    one timer for all of them looks every half renewal period while any runs, and gives a task
    that renews every ``renew_every`` to each request still running when its renewal is due
    (between 1 and 1.5 renewal periods after it locked: a third to a half of the lock timeout).
    A timer per request cost each request a heap push and pop among the cancelled timers of the
    requests before it."""

    def __init__(self, keys: IdempotencyKeys, loop: asyncio.AbstractEventLoop) -> None:
        self.keys = keys
        self.loop = loop
        self.running: dict[_Held, None] = {}  # in the order they locked: oldest first
        self.timer: asyncio.TimerHandle | None = None

    def hold(self, lease: Lease) -> _Held:
        held = _Held(lease)
        self.running[held] = None
        if self.timer is None:
            self.timer = self.loop.call_later(self.keys.renew_every / 2, self._look)
        return held

    async def release(self, held: _Held) -> None:
        self.running.pop(held, None)
        if held.task is not None:
            held.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held.task

    def _look(self) -> None:
        self.timer = None
        due = time.monotonic() - self.keys.renew_every
        for held in self.running:
            if held.since > due:
                break  # the rest locked later still
            if held.task is None:
                held.task = asyncio.create_task(self._renew(held.lease), context=held.context)
        if self.running:
            self.timer = self.loop.call_later(self.keys.renew_every / 2, self._look)

    async def _renew(self, lease: Lease) -> None:
        while True:
            try:
                if not await self.keys.renew(lease):
                    return
            except StoreUnavailable as exc:  # the next renewal may get through
                log.info("could not renew an idempotency lock: %s", exc)
            await asyncio.sleep(self.keys.renew_every)


class _RollBack(Exception):
    """An answer not worth storing: undo the handler's writes and free the key."""


class _Replay(Exception):
    """The key already holds an answer: leave the transaction untouched and replay it."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__("replay")
        self.response = response


class _LockLost(Exception):
    def __init__(self, error: IdempotencyKeyInProgress) -> None:
        super().__init__(error.message)
        self.error = error


class _Captured:
    """Holds the app's response until the transaction has committed."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    def response(self, keep: frozenset[str]) -> StoredResponse:
        """The response to store: only the headers in ``keep``."""
        if self.status is None:
            raise RuntimeError("the app returned without sending a response")
        headers = [
            (name, v.decode("latin-1"))
            for n, v in self.headers
            if (name := n.decode("latin-1").lower()) in keep
        ]
        return StoredResponse(self.status, headers, bytes(self.body))

    async def send_to(self, send: Send) -> None:
        """Send the response as the app gave it, with its whole body's length."""
        if self.status is None:
            raise RuntimeError("the app returned without sending a response")
        headers = [(n, v) for n, v in self.headers if n.lower() != b"content-length"]
        headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": bytes(self.body)})


async def _send_replay(send: Send, response: StoredResponse) -> None:
    metrics.replays.inc()
    await _send_stored(send, response, replayed=True)


async def _send_stored(send: Send, response: StoredResponse, *, replayed: bool = False) -> None:
    headers = [
        (n.encode("latin-1"), v.encode("latin-1"))
        for n, v in response.headers
        if n != "content-length"
    ]
    headers.append((b"content-length", str(len(response.body)).encode()))
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Problem(400, "client-disconnected", "the client went away mid-request")
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            raise Problem(
                413, "content-too-large", f"at most {limit} bytes", title="Content Too Large"
            )
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_body(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
