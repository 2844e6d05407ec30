"""Coalesce concurrent calls into one database round trip (the group-commit idea, for callers).

Calls that arrive while a batch is in flight wait for the next one; no task lingers when idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Batcher"]

ItemT = TypeVar("ItemT")
R = TypeVar("R")


class Batcher(Generic[ItemT, R]):
    """``await batcher(item)``; the handler maps a list of items to one result per item."""

    def __init__(
        self, handler: Callable[[list[ItemT]], Awaitable[list[R]]], max_batch: int = 512
    ) -> None:
        self._handler = handler
        self._max = max_batch
        self._pending: list[tuple[ItemT, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def __call__(self, item: ItemT) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the callers of this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            try:
                results = await self._handler([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch, exc)
                    continue
                for one in batch:  # find the bad item instead of failing its neighbours
                    try:
                        _succeed([one], await self._handler([one[0]]))
                    except Exception as one_exc:
                        _fail([one], one_exc)
                continue
            _succeed(batch, results)


def _succeed(batch: list[tuple[ItemT, asyncio.Future[R]]], results: list[R]) -> None:
    for (_, future), value in zip(batch, results, strict=True):
        if not future.done():
            future.set_result(value)


def _fail(batch: list[tuple[ItemT, asyncio.Future[R]]], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
