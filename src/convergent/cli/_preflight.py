"""What every command checks before it works: one line naming the fix, never a traceback.

One-shot commands (runs, dlq, webhooks, sweep) stop at once when the database is unreachable,
never migrated or behind. Long-running ones (worker, relay, consume) stop at once on a bad URL or
a schema that is not at head, but wait for a database or broker that is away (a restart or an
outage is no reason for a supervisor to give up on them), saying so in one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from convergent.cli.app import err_console, explain
from convergent.errors import StoreUnavailable, TransportError
from convergent.store import Store
from convergent.transports import Transport, transport_from_url

__all__ = ["checked_store", "wait_for_broker", "wait_for_database"]

_RETRY = 2.0


def _warn(message: str) -> None:
    err_console.print(
        f"[yellow]waiting:[/] {message}", markup=True, soft_wrap=True, highlight=False
    )


@contextlib.asynccontextmanager
async def checked_store(database_url: str | None) -> AsyncIterator[Store]:
    """A Store whose database answers and has our tables at head, closed on exit."""
    store = Store(database_url)
    try:
        await store.check_schema()
        yield store
    finally:
        await store.close()


async def _pause(stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), _RETRY)


async def wait_for_database(store: Store, stop: asyncio.Event) -> bool:
    """Check the schema, waiting while the database is away; False if stopped meanwhile."""
    said = False
    while not stop.is_set():
        try:
            await store.check_schema()
            return True
        except StoreUnavailable as exc:
            if not said:
                _warn(explain(exc))
                said = True
            await _pause(stop)
    return False


async def wait_for_broker(
    store: Store, broker_url: str | None, stop: asyncio.Event, *, wait: bool = True
) -> bool:
    """Connect once to the broker (a bad URL raises), waiting while it is away unless not
    ``wait``; False if it never answered."""
    transport: Transport = transport_from_url(broker_url, store)
    said = False
    try:
        while not stop.is_set():
            try:
                await transport.start()
                return True
            except TransportError as exc:
                if not wait:
                    err_console.print(
                        f"[yellow]warning:[/] {explain(exc)} (retrying in the background)",
                        soft_wrap=True,
                        highlight=False,
                    )
                    return False
                if not said:
                    _warn(explain(exc))
                    said = True
                await _pause(stop)
        return False
    finally:
        with contextlib.suppress(Exception):
            await transport.close()
