"""`convergent worker`: the standard background loops (`convergent.runtime`) for YOUR app.

The app's modules (``--import``, required and repeatable) declare its workflows, topics and
consumers; the worker runs them, and the relay, webhook delivery and maintenance unless turned off.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from typing import Annotated

import typer

from convergent.cli._observe import LogFormat, MetricsPort, log_started, observe
from convergent.cli._preflight import wait_for_broker, wait_for_database
from convergent.cli.app import BrokerUrl, DatabaseUrl, app, console, fail, run_async
from convergent.loops import run_loops
from convergent.outbox.consumer import CONSUMERS
from convergent.runtime import LoopOptions, parse_queues, standard_loops
from convergent.store import Store

__all__ = ["import_app", "worker"]


def import_app(modules: list[str]) -> list[str]:
    """Import the modules that declare workflows, topics and consumers (``module[:attr]``)."""
    if os.getcwd() not in sys.path:  # `--import myapp` from the app's directory, as python -m does
        sys.path.insert(0, os.getcwd())
    imported = []
    for name in modules:
        module_name = name.split(":", 1)[0]
        try:
            importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise fail(
                f"cannot import {module_name!r} ({exc}): pass the module that defines your "
                "workflows, e.g. --import myapp.workflows, and check it is on PYTHONPATH"
            ) from None
        imported.append(module_name)
    return imported


@app.command()
def worker(
    import_: Annotated[
        list[str],
        typer.Option(
            "--import",
            "--app",
            help="module (or module:attr) declaring your workflows, topics and consumers; "
            "required, repeatable",
            show_default=False,
        ),
    ],
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    concurrency: Annotated[int, typer.Option(help="runs held at once")] = 50,
    queues: Annotated[
        list[str], typer.Option("--queues", help="queue to serve, optionally name=limit")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    lease_seconds: Annotated[float, typer.Option(help="lease length; renewed at 1/3")] = 30.0,
    poll_interval: Annotated[float, typer.Option(help="seconds between polls")] = 1.0,
    relay: Annotated[
        bool, typer.Option(help="also relay the outbox (off when `convergent relay` runs)")
    ] = True,
    consumers: Annotated[
        bool,
        typer.Option(help="also run the declared consumers (off when `convergent consume` runs)"),
    ] = True,
    webhooks: Annotated[bool, typer.Option(help="also deliver webhooks")] = True,
    maintenance: Annotated[
        bool, typer.Option(help="also purge what outlived its retention")
    ] = True,
    metrics_port: MetricsPort = None,
    log_format: LogFormat = None,
) -> None:
    """Run workflow runs (and the other background loops) until SIGTERM or Ctrl-C."""
    observe("worker", log_format, metrics_port)
    imported = import_app(import_)
    options = LoopOptions(
        queues=parse_queues(queues, concurrency),
        concurrency=concurrency,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
        relay=relay,
        consumers=consumers,
        webhooks=webhooks,
        maintenance=maintenance,
    )

    async def go() -> None:
        store = Store(database_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            # an unmigrated database stops the worker now; one that is away is waited for
            if not await wait_for_database(store, stop):
                return
            if relay or (consumers and CONSUMERS):  # workflows need no broker: only say so
                await wait_for_broker(store, broker_url, stop, wait=False)
            loops = standard_loops(store, broker_url, options)
            log_started("worker", database_url, broker_url)
            console.print(f"[green]worker started[/] ({', '.join(imported)})")
            await run_loops(loops, stop)
        finally:
            await store.close()

    run_async(go())
