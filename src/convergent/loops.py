"""Background loops: objects with ``async run(stop)``, run side by side until ``stop`` is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from convergent.outages import describe, is_transient

__all__ = ["Loop", "run_loops"]

log = logging.getLogger(__name__)


class Loop(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


async def run_loops(loops: list[Loop], stop: asyncio.Event, restart_delay: float = 1.0) -> None:
    """Run ``loops`` until ``stop``; one that crashes is logged and restarted after a pause."""

    async def guarded(loop: Loop) -> None:
        while not stop.is_set():
            try:
                await loop.run(stop)
            except Exception as exc:
                if is_transient(exc):  # an outage, not a bug: one line, no traceback
                    log.warning("%s stopped: %s; restarting", type(loop).__name__, describe(exc))
                else:
                    log.exception("%s crashed; restarting", type(loop).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), restart_delay)

    await asyncio.gather(*(guarded(each) for each in loops))
