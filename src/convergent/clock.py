"""Clocks. Everything that reads the time takes a `Clock`, so tests can move time by hand."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "system_clock", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC now."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


system_clock = SystemClock()


class ManualClock:
    """A clock that only moves when told to; sleepers wake when `advance` passes their deadline."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")
        self._changed = asyncio.Condition() if _has_loop() else None
        self._tasks: set[asyncio.Task[None]] = set()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when
        self._wake()

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        self._now += timedelta(seconds=seconds, **delta)
        self._wake()
        return self._now

    async def sleep(self, seconds: float) -> None:
        deadline = self._now + timedelta(seconds=seconds)
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            await self._changed.wait_for(lambda: self._now >= deadline)

    def _wake(self) -> None:
        cond = self._changed
        if cond is None:
            return

        async def notify() -> None:
            async with cond:
                cond.notify_all()

        try:
            task = asyncio.get_running_loop().create_task(notify())
        except RuntimeError:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
