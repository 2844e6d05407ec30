"""The shop's background loops, each an object with ``async run(stop)``.

`convergent serve` runs them all in its own process by default (the embedded, single-process
shop); with ``--no-loops`` the API only answers HTTP and `convergent worker` / `convergent relay`
processes do this work instead. The demo uses the same list.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

import convergent.shop.readmodels  # noqa: F401 - declares the shop's consumers
from convergent.idempotency import purge_expired_keys
from convergent.loops import Loop
from convergent.outbox import Consumer, Relay
from convergent.outbox.consumer import CONSUMERS
from convergent.shop.metrics import StoreGauges
from convergent.shop.webhooks import DISPATCHER_ENV
from convergent.store import Store
from convergent.transports import transport_from_url
from convergent.webhooks import Dispatcher
from convergent.workflows import Worker

__all__ = ["LOOPS_ENV", "loops_enabled", "shop_loops"]

LOOPS_ENV = "CONVERGENT_SHOP_LOOPS"
_OFF = ("0", "false", "no", "off")

log = logging.getLogger(__name__)


@dataclass
class Messaging:
    """The outbox relay and the shop's consumers, sharing one transport."""

    store: Store
    broker_url: str | None
    relay: bool = True
    consumers: bool = True

    async def run(self, stop: asyncio.Event) -> None:
        transport = transport_from_url(self.broker_url, self.store)
        loops: list[Loop] = []
        if self.relay:
            loops.append(Relay(self.store, transport, poll_interval=0.5))
        if self.consumers:  # every consumer the shop declares (its read models)
            loops += [Consumer.from_spec(self.store, transport, spec) for spec in CONSUMERS]
        try:
            await asyncio.gather(*(each.run(stop) for each in loops))
        finally:
            await transport.close()


@dataclass
class KeySweeper:
    """Purges idempotency keys past their retention."""

    store: Store
    interval: float = 60.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await purge_expired_keys(self.store)
            except Exception:  # the next sweep tries again
                log.exception("idempotency key sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)


def loops_enabled(flag: bool | None = None) -> bool:
    """The explicit flag, else ``CONVERGENT_SHOP_LOOPS`` (on unless 0/false/no/off)."""
    if flag is not None:
        return flag
    return os.environ.get(LOOPS_ENV, "1").lower() not in _OFF


def shop_loops(
    store: Store,
    broker_url: str | None = None,
    *,
    workflows: bool = True,
    relay: bool = True,
    webhooks: bool = True,
) -> list[Loop]:
    """Every loop the shop needs; the flags leave out what other processes run."""
    import convergent.shop.workflows  # noqa: F401 - registers the shop's workflows

    loops: list[Loop] = [
        Messaging(store, broker_url, relay=relay),
        KeySweeper(store),
        StoreGauges(store),
    ]
    if workflows:
        loops.append(Worker(store, poll_interval=0.5))
    if webhooks and os.environ.get(DISPATCHER_ENV, "1").lower() not in _OFF:
        loops.append(Dispatcher(store))
    return loops
