"""The shop's background loops: the toolkit's standard set (`convergent.runtime`).

`convergent serve` runs them all in its own process by default (the embedded, single-process
shop); with ``--no-loops`` the API only answers HTTP and `convergent worker --import
convergent_shop.background` / `convergent relay` processes do this work instead. The demo uses the
same set.
"""

from __future__ import annotations

import os

import convergent_shop.background  # noqa: F401 - declares the shop's workflows and consumers
from convergent.loops import Loop
from convergent.runtime import LoopOptions, standard_loops
from convergent.store import Store
from convergent_shop.webhooks import DISPATCHER_ENV

__all__ = ["LOOPS_ENV", "loops_enabled", "shop_loops"]

LOOPS_ENV = "CONVERGENT_SHOP_LOOPS"
_OFF = ("0", "false", "no", "off")


def loops_enabled(flag: bool | None = None) -> bool:
    """The explicit flag, else ``CONVERGENT_SHOP_LOOPS`` (on unless 0/false/no/off)."""
    if flag is not None:
        return flag
    return os.environ.get(LOOPS_ENV, "1").lower() not in _OFF


def shop_loops(store: Store, broker_url: str | None = None) -> list[Loop]:
    """Every loop the shop needs in one process."""
    webhooks = os.environ.get(DISPATCHER_ENV, "1").lower() not in _OFF
    return standard_loops(store, broker_url, LoopOptions(poll_interval=0.5, webhooks=webhooks))
