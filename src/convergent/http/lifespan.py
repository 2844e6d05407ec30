"""A lifespan for FastAPI/Starlette apps: migrate, then run the background loops beside the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from convergent.loops import Loop, run_loops
from convergent.outbox import Relay
from convergent.store import Store
from convergent.transports import transport_from_url
from convergent.webhooks import Dispatcher
from convergent.workflows import Worker

__all__ = ["lifespan"]


def lifespan(
    store: Store,
    *,
    broker_url: str | None = None,
    migrate: bool = True,
    workflows: bool = True,
    relay: bool = True,
    webhooks: bool = False,
    extra: list[Loop] | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """``FastAPI(lifespan=lifespan(store))``: apply migrations at start-up, then run a workflow
    worker, the outbox relay (to ``broker_url``, default ``embedded://``) and, if asked, webhook
    delivery in the app's process until it stops. In production these loops may run in
    `convergent worker` processes instead: pass ``workflows=False, relay=False``.
    """

    @asynccontextmanager
    async def run(_app: Any) -> AsyncIterator[None]:
        if migrate:
            await store.migrate()
        loops: list[Loop] = list(extra or [])
        if workflows:
            loops.append(Worker(store))
        if relay:
            loops.append(Relay(store, transport_from_url(broker_url, store)))
        if webhooks:
            loops.append(Dispatcher(store))
        stop = asyncio.Event()
        task = asyncio.create_task(run_loops(loops, stop))
        try:
            yield
        finally:
            stop.set()
            await task

    return run
