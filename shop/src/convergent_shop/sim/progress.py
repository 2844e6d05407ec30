"""Live progress in the terminal, drawn by Rich from the sampler's latest figures."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from convergent_shop.sim.metrics import Sampler

__all__ = ["LiveProgress", "render"]

_ROWS = [
    ("requests", "HTTP requests sent"),
    ("retries", "retries (same key)"),
    ("accepted_orders", "orders accepted"),
    ("converged", "orders final"),
    ("ttc_p50", "time to consistency p50 (s)"),
    ("ttc_p95", "time to consistency p95 (s)"),
    ("runs_in_flight", "workflow runs in flight"),
    ("outbox_backlog", "outbox backlog"),
    ("dead_letters", "dead letters"),
    ("trades_placed", "exchange orders placed"),
    ("trades_open", "exchange orders not yet filled"),
    ("keys_in_progress", "idempotency keys in progress"),
]


def render(title: str, sample: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, min_width=48)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("elapsed", f"{sample.get('t', 0):.1f}s")
    for key, label in _ROWS:
        value = sample.get(key)
        table.add_row(label, "n/a" if value is None else str(value))
    for route, n in (sample.get("not_available") or {}).items():
        table.add_row(f"[dim]not available: {route}[/]", str(n))
    return table


class LiveProgress:
    """A loop (``run(stop)``) redrawing the figures twice a second."""

    def __init__(self, sampler: Sampler, title: str, console: Console | None = None) -> None:
        self.sampler = sampler
        self.title = title
        self.console = console or Console()

    async def run(self, stop: asyncio.Event) -> None:
        # drawn from this loop twice a second, not by Rich's refresh thread: that thread would
        # take the GIL from the shop's event loop four times a second
        with Live(
            render(self.title, {}), console=self.console, auto_refresh=False, transient=False
        ) as live:
            while not stop.is_set():
                live.update(render(self.title, self.sampler.latest), refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
            live.update(render(self.title, self.sampler.latest), refresh=True)
        self.console.print()
