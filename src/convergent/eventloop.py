"""Which event loop a convergent process runs on: uvloop where installed, else asyncio's own.

uvloop (the ``fast`` extra, with httptools for uvicorn's HTTP parsing) runs the same engines with
less CPU per callback and socket; on a busy process that is lower latency at the same load.
``CONVERGENT_EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or to debug with asyncio's
own tools); ``uvloop`` insists on it and fails at start-up when it is missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from convergent import settings
from convergent.errors import MissingExtra

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for new event loops (None: asyncio's default)."""
    choice = settings.load().event_loop
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise MissingExtra("fast", "CONVERGENT_EVENT_LOOP=uvloop") from None
        return None
    return uvloop.new_event_loop


def loop_name() -> Literal["uvloop", "asyncio"]:
    """What uvicorn's ``loop=`` should be, by the same choice."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
