"""Group commit: one writer task turns the checkpoints of many runs into one transaction.

Each run awaits its own write, so its order is kept; runs that write at the same moment share a
round trip and a commit. A batch that fails is retried write by write so one bad row does not
fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store import Store, direct

__all__ = ["DONE_CHANNEL", "Committer", "Finished", "add_done_waiter", "local_active"]

log = logging.getLogger(__name__)

DONE_CHANNEL = "convergent_runs_done"


@dataclass(frozen=True)
class Finished:
    run_id: uuid.UUID
    workflow: str
    status: str
    result: Any
    error: str | None


#: runs a worker of this process holds now: result() needs no first read for them
local_active: set[uuid.UUID] = set()

# result() waiters in this process, resolved right after the commit that made a run final
_done_waiters: dict[uuid.UUID, list[Callable[[Finished], None]]] = {}


def add_done_waiter(run_id: uuid.UUID, callback: Callable[[Finished], None]) -> Callable[[], None]:
    """Call ``callback`` when this process commits the run's final state; returns a remover."""
    _done_waiters.setdefault(run_id, []).append(callback)

    def remove() -> None:
        callbacks = _done_waiters.get(run_id)
        if callbacks and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del _done_waiters[run_id]

    return remove


class _Write:
    __slots__ = ("finished", "future", "params", "statement")

    def __init__(self, statement: Any, params: dict[str, Any], finished: Finished | None) -> None:
        self.statement = statement
        self.params = params
        self.finished = finished
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Committer:
    """Batches writes from many run tasks into single transactions."""

    def __init__(self, store: Store, max_batch: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self.batches = 0
        self.writes = 0
        self._kinds: dict[int, str] = {}
        self._flushers = 0

    async def write(
        self, statement: Any, params: dict[str, Any], finished: Finished | None = None
    ) -> None:
        """Write and wait until it is committed."""
        await self.enqueue(statement, params, finished)  # cancelling the wait keeps the write

    def enqueue(
        self, statement: Any, params: dict[str, Any], finished: Finished | None = None
    ) -> asyncio.Future[None]:
        """Queue a write; the future resolves when it is committed (writes commit in order)."""
        item = _Write(statement, params, finished)
        self._queue.put_nowait(item)
        return item.future

    async def run(self) -> None:
        """Write batches until `close` is called (after draining what was queued).

        Where the database takes parallel commits, a few batches are in flight at once (rows
        of different runs never conflict, and each run waits for its own write).
        """
        self._flushers = self.store.sql.parallel_commits
        await asyncio.gather(*(self._flush_loop() for _ in range(self._flushers)))

    def _pass_close_on(self) -> None:
        """A flusher saw the close marker: hand it to the next one still running. The last one
        leaves the queue without it, so the committer can run again (a restarted worker loop)."""
        self._flushers -= 1
        if self._flushers:
            self._queue.put_nowait(None)

    async def _flush_loop(self) -> None:
        closing = False
        while not closing:
            first = await self._queue.get()
            if first is None:
                self._pass_close_on()
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    closing = True
                    self._pass_close_on()
                    break
                batch.append(item)
            await self._commit(batch)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def use_single_statement(self, kinds: dict[int, str]) -> None:
        """Write batches as one statement (where the database can: ``one_statement_writes``);
        ``kinds`` names each known statement."""
        self._kinds = kinds

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            if self._kinds and all(id(item.statement) in self._kinds for item in batch):
                await self._execute_single(batch)
            else:
                async with self.store.begin() as conn:
                    await self._execute(conn, batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, exc)
                return
            log.warning("batch of %d writes failed (%s); writing them one by one", len(batch), exc)
            for item in batch:
                try:
                    async with self.store.begin() as conn:
                        await self._execute(conn, [item])
                except Exception as one_exc:
                    _settle([item], one_exc)
                else:
                    self._done([item])
            return
        self._done(batch)

    async def _execute_single(self, batch: list[_Write]) -> None:
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for item in batch:
            by_kind.setdefault(self._kinds[id(item.statement)], []).append(item.params)
        notify = any(item.finished for item in batch)
        stmt, params = self.store.sql.write_checkpoints(by_kind, DONE_CHANNEL if notify else None)
        async with self.store.autocommit() as conn:
            await direct.execute(conn, stmt, params)

    async def _execute(self, conn: AsyncConnection, batch: list[_Write]) -> None:
        groups: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
        for item in batch:
            groups.setdefault(id(item.statement), (item.statement, []))[1].append(item.params)
        for statement, params in groups.values():
            await direct.execute(conn, statement, params if len(params) > 1 else params[0])
        if any(item.finished for item in batch):
            await self.store.notifier.notify(conn, DONE_CHANNEL)

    def _done(self, batch: list[_Write]) -> None:
        self.batches += 1
        self.writes += len(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_result(None)
            if item.finished is not None:
                for callback in list(_done_waiters.get(item.finished.run_id, ())):
                    with contextlib.suppress(Exception):
                        callback(item.finished)


def _settle(batch: list[_Write], exc: Exception) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(exc)
