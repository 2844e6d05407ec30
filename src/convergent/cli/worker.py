"""`convergent worker`: a small composition of loops, each an object with ``run(stop)``.

Workflows come from the application's module (``--import``, repeatable); other helpers add their
loops (outbox relay, webhook dispatcher) to `worker_loops`.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from typing import Annotated

import typer

from convergent.cli.app import BrokerUrl, DatabaseUrl, app, console, fail, run_async
from convergent.loops import Loop, run_loops
from convergent.store import Store

__all__ = ["DEFAULT_APP_MODULE", "Loop", "import_app", "worker", "worker_loops"]

DEFAULT_APP_MODULE = "convergent.shop.workflows"


def import_app(modules: list[str]) -> list[str]:
    """Import the modules that define workflows (``module`` or ``module:attr``)."""
    names = modules or [DEFAULT_APP_MODULE]
    if os.getcwd() not in sys.path:  # `--import myapp` from the app's directory, as python -m does
        sys.path.insert(0, os.getcwd())
    imported = []
    for name in names:
        module_name = name.split(":", 1)[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not modules and exc.name == DEFAULT_APP_MODULE:
                continue  # the shop has no workflows module yet: run with what is registered
            raise fail(
                f"cannot import {module_name!r} ({exc}): pass the module that defines your "
                "workflows, e.g. --import myapp.workflows, and check it is on PYTHONPATH"
            ) from None
        imported.append(module_name)
    return imported


def worker_loops(
    store: Store,
    *,
    concurrency: int,
    queues: list[str],
    lease_seconds: float,
    poll_interval: float,
    broker_url: str | None = None,
    relay: bool = True,
    webhooks: bool = True,
    shop: bool = False,
) -> list[Loop]:
    """Every loop `convergent worker` runs: workflow runs, and the outbox relay, webhook delivery
    and key sweeping unless turned off; the shop's own consumers when serving the shop."""
    from convergent.workflows import Worker

    limits: dict[str, int] = {}
    for spec in queues or ["default"]:
        name, _, limit = spec.partition("=")
        limits[name] = int(limit) if limit else concurrency
    loops: list[Loop] = [
        Worker(
            store,
            queues=limits,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            poll_interval=poll_interval,
        )
    ]
    if shop:
        from convergent.shop.loops import shop_loops

        return loops + shop_loops(
            store, broker_url, workflows=False, relay=relay, webhooks=webhooks
        )
    if relay:
        from convergent.outbox import Relay
        from convergent.transports import transport_from_url

        loops.append(Relay(store, transport_from_url(broker_url, store)))
    if webhooks:
        from convergent.webhooks import Dispatcher

        loops.append(Dispatcher(store))
    return loops


@app.command()
def worker(
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    import_: Annotated[
        list[str],
        typer.Option(
            "--import",
            "--app",
            help=f"module (or module:attr) defining your workflows; default {DEFAULT_APP_MODULE}",
        ),
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    concurrency: Annotated[int, typer.Option(help="runs held at once")] = 50,
    queues: Annotated[
        list[str], typer.Option("--queues", help="queue to serve, optionally name=limit")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    lease_seconds: Annotated[float, typer.Option(help="lease length; renewed at 1/3")] = 30.0,
    poll_interval: Annotated[float, typer.Option(help="seconds between polls")] = 1.0,
    relay: Annotated[
        bool, typer.Option(help="also relay the outbox (off when `convergent relay` runs)")
    ] = True,
    webhooks: Annotated[bool, typer.Option(help="also deliver webhooks")] = True,
) -> None:
    """Run workflow runs (and the other background loops) until SIGTERM or Ctrl-C."""
    imported = import_app(import_)

    async def go() -> None:
        store = Store(database_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loops = worker_loops(
            store,
            concurrency=concurrency,
            queues=queues,
            lease_seconds=lease_seconds,
            poll_interval=poll_interval,
            broker_url=broker_url,
            relay=relay,
            webhooks=webhooks,
            shop=DEFAULT_APP_MODULE in imported,
        )
        console.print(f"[green]worker started[/] ({', '.join(imported) or 'no app module'})")
        try:
            await run_loops(loops, stop)
        finally:
            await store.close()

    run_async(go())
