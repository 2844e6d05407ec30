"""Wait until a resource reaches a state: woken by the notifier, re-checked by a slow poll."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.resources.table import CHANNEL
from convergent.store import Store

__all__ = ["wait_for"]

T = TypeVar("T")


async def wait_for(
    store: Store,
    resource_type: str,
    resource_id: Any,
    load: Callable[[AsyncConnection], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float,
    poll_interval: float = 1.0,
) -> T:
    """Load the resource until ``done`` says so or ``timeout`` passes; return the last load.

    Subscribes before the first read, so a change committed in between still wakes us.
    """
    key = f"{resource_type}:{resource_id}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, timeout)
    async with store.notifier.subscribe(CHANNEL) as sub:
        while True:
            async with store.read() as conn:
                value = await load(conn)
            remaining = deadline - loop.time()
            if done(value) or remaining <= 0:
                return value
            poll_at = loop.time() + min(remaining, poll_interval)
            while (left := poll_at - loop.time()) > 0:
                if await sub.wait(left) and key in sub.drain():
                    break
