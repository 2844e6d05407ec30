"""SQLite statements run on the event loop's own thread instead of aiosqlite's worker thread.

aiosqlite runs each call on a thread of its own: a queue put, a thread wake-up and a
``call_soon_threadsafe`` back, per statement and per fetch. The costly part is the GIL: while
the event loop is busy, the worker thread waits for it (up to the 5 ms switch interval), and the
write lock is held all that time. A small SQLite statement takes tens of microseconds, so running
it where it is awaited is faster by far, and a transaction no longer yields to other tasks in the
middle of its statements.

The one call that can wait long is taking the write lock while another *process* holds it: the
connection's ``busy_timeout`` is 0 and `InlineConnection` waits for it here, asynchronously, so
the loop goes on meanwhile. ``CONVERGENT_SQLITE_INLINE=0`` goes back to aiosqlite's thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Generator
from typing import Any

import aiosqlite

__all__ = ["BUSY_WAIT_SECONDS", "InlineConnection", "inline_connect"]

#: how long a statement waits for another process's write lock before "database is locked"
BUSY_WAIT_SECONDS = 30.0
# SQLITE_BUSY and SQLITE_BUSY_RECOVERY; not SQLITE_BUSY_SNAPSHOT (517), which waiting never fixes
_RETRYABLE = frozenset({5, 261})


class _InlineQueue:
    """Stands in for aiosqlite's queue to its worker thread (SQLAlchemy's adapter puts its
    isolation-level call there directly): runs the call at once and settles its future."""

    def put_nowait(self, item: tuple[asyncio.Future[Any] | None, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to whoever awaits the future
            if future is not None:
                future.set_exception(exc)
            return
        if future is not None:
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` without its thread: every call runs where it is awaited."""

    def __init__(self, connector: Callable[[], sqlite3.Connection]) -> None:
        super().__init__(connector, iter_chunk_size=64)
        self._tx = _InlineQueue()  # type: ignore[assignment]

    def __await__(self) -> Generator[Any, None, InlineConnection]:
        return self._open().__await__()

    async def _open(self) -> InlineConnection:
        if self._connection is None:
            self._connection = await self._retrying(self._connector)
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        try:  # the common case: no wait, no retry machinery
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        return await self._retrying(fn, *args, **kwargs)

    async def _retrying(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` until another process lets go of the lock (SQLite's busy handler,
        but sleeping on the loop instead of blocking it)."""
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        delay = 0.001
        while True:
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def run_now(self, sql: str) -> bool:
        """Run ``sql`` (no parameters, no rows) at once; False if it failed, for the caller to
        run it again through the driver's usual path (which waits for a busy lock)."""
        if self._connection is None:
            return False
        try:
            self._connection.execute(sql)
        except sqlite3.Error:
            return False
        return True

    def stop(self) -> asyncio.Future[Any] | None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        return None

    async def close(self) -> None:
        self.stop()


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in _RETRYABLE


def inline_connect(database: str, **kwargs: Any) -> InlineConnection:
    """What SQLAlchemy's aiosqlite adapter calls instead of ``aiosqlite.connect``."""
    kwargs.pop("iter_chunk_size", None)
    kwargs.pop("loop", None)
    # the pool may close a connection from the garbage collector of another thread
    kwargs["check_same_thread"] = False
    return InlineConnection(lambda: sqlite3.connect(database, **kwargs))
