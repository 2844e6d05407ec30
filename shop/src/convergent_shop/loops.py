"""The shop's background loops: the toolkit's standard set (`convergent.runtime`).

`convergent serve` runs them all in its own process by default (the embedded, single-process
shop); with ``--no-loops`` the API only answers HTTP and `convergent worker --import
convergent_shop.background` / `convergent relay` processes do this work instead. The demo uses the
same set.
"""

from __future__ import annotations

import convergent_shop.background  # noqa: F401 - declares the shop's workflows and consumers
from convergent.loops import Loop
from convergent.runtime import LoopOptions, standard_loops
from convergent.store import Store
from convergent_shop import settings as shop_settings

__all__ = ["LOOPS_ENV", "loops_enabled", "shop_loops"]

LOOPS_ENV = "CONVERGENT_SHOP_LOOPS"


def loops_enabled(flag: bool | None = None) -> bool:
    """The explicit flag, else ``CONVERGENT_SHOP_LOOPS`` (on unless 0/false/no/off)."""
    return shop_settings.load(shop_loops=flag).shop_loops


def shop_loops(store: Store, broker_url: str | None = None) -> list[Loop]:
    """Every loop the shop needs in one process."""
    webhooks = shop_settings.load().webhook_dispatcher
    return standard_loops(store, broker_url, LoopOptions(poll_interval=0.5, webhooks=webhooks))
