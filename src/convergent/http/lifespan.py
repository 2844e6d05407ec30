"""A lifespan for FastAPI/Starlette apps: migrate, then run the background loops beside the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from convergent.loops import Loop, run_loops
from convergent.runtime import LoopOptions, standard_loops
from convergent.store import Store

__all__ = ["lifespan"]


def lifespan(
    store: Store,
    *,
    broker_url: str | None = None,
    migrate: bool = True,
    workflows: bool = True,
    relay: bool = True,
    consumers: bool = True,
    webhooks: bool = False,
    maintenance: bool = True,
    extra: list[Loop] | None = None,
    options: LoopOptions | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """``FastAPI(lifespan=lifespan(store))``: apply migrations at start-up (``migrate=False``: only
    check them, raising `NotMigrated`), then run the standard
    loops (`convergent.runtime.standard_loops`) in the app's process until it stops: a workflow
    worker, the outbox relay (to ``broker_url``, default ``embedded://``), the declared consumers,
    maintenance and, if asked, webhook delivery. In production these loops may run in
    `convergent worker` processes instead: pass ``workflows=False, relay=False, consumers=False``.
    ``options`` replaces the flags when given.
    """
    chosen = options or LoopOptions(
        workflows=workflows,
        relay=relay,
        consumers=consumers,
        webhooks=webhooks,
        maintenance=maintenance,
        extra=tuple(extra or ()),
    )

    @asynccontextmanager
    async def run(_app: Any) -> AsyncIterator[None]:
        if migrate:
            await store.migrate()
        else:  # migrated by `convergent migrate` or Alembic: stop now if it was not
            await store.check_schema()
        stop = asyncio.Event()
        task = asyncio.create_task(run_loops(standard_loops(store, broker_url, chosen), stop))
        try:
            yield
        finally:
            stop.set()
            await task

    return run
