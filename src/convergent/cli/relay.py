"""`convergent relay`: publish the outbox through the broker until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from convergent.cli._observe import (
    LogFormat,
    MetricsPort,
    log_started,
    observe,
    run_with_gauges,
)
from convergent.cli.app import BrokerUrl, DatabaseUrl, app, console, run_async

Imports = Annotated[
    list[str] | None,
    typer.Option(
        "--import",
        help="module to import first (declares topics and consumers); repeatable",
        show_default=False,
    ),
]


def import_modules(modules: list[str] | None) -> None:
    from convergent.cli.worker import import_app

    import_app(modules or [])


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT finish the current batch, release leases and exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


@app.command()
def relay(
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    imports: Imports = None,
    batch_size: Annotated[int, typer.Option(help="rows per publish batch")] = 1000,
    metrics_port: MetricsPort = None,
    log_format: LogFormat = None,
) -> None:
    """Publish committed outbox rows through the broker, in order per key, until SIGTERM."""
    observe("relay", log_format, metrics_port)
    from convergent.cli._preflight import wait_for_broker, wait_for_database
    from convergent.runtime import Messaging
    from convergent.store import Store

    import_modules(imports)

    async def go() -> int:
        store = Store(database_url)
        stop = asyncio.Event()
        stop_on_signals(stop)
        messaging = Messaging(store, broker_url, consumers=False, relay_batch_size=batch_size)
        try:
            if await wait_for_database(store, stop) and await wait_for_broker(
                store, broker_url, stop
            ):
                log_started("relay", database_url, broker_url)
                await run_with_gauges(messaging, store, stop, sample=metrics_port is not None)
        finally:
            await store.close()
        return messaging.published

    published = run_async(go())
    console.print(f"relay stopped after publishing {published} messages")
