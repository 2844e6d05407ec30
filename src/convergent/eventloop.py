"""Which event loop a convergent process runs on: uvloop where installed, else asyncio's own.

uvloop (the ``fast`` extra, with httptools for uvicorn's HTTP parsing) runs the same engines with
less CPU per callback and socket; on a busy process that is lower latency at the same load.
``CONVERGENT_EVENT_LOOP=asyncio`` keeps the standard loop (to compare, or to debug with asyncio's
own tools); ``uvloop`` insists on it and fails at start-up when it is missing.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from convergent import settings
from convergent.errors import MissingExtra

__all__ = ["freeze_start_up", "loop_factory", "loop_name", "run", "tune_gc"]

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


#: gen0 after 20,000 allocations net (Python's 700 runs it every few requests); gen2 rarely
GC_THRESHOLDS = (20_000, 50, 100)
_gc_tuned = False


def tune_gc() -> None:
    """For a process's entry point, once start-up is done (the CLI calls it; call it in your own
    server's start-up if you like): what exists now (modules, tables, compiled statements) is
    frozen out of the collector's reach, and young objects are collected less often. A full
    collection then walks only what the work made, and runs rarely: on the workflow benchmark
    the p99 falls by half or more. ``CONVERGENT_GC_TUNING=0`` keeps Python's own collector
    settings."""
    global _gc_tuned
    if not settings.load().gc_tuning:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_start_up() -> None:
    """In a process tuned by `tune_gc`, freeze what its command built since (its app, its
    statements) before the loop starts; elsewhere (a test process) nothing."""
    if _gc_tuned:
        gc.collect()
        gc.freeze()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop, after `freeze_start_up`."""
    freeze_start_up()
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
