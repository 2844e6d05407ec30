"""`convergent consume`: run the declared consumers (``@consumer``) until SIGTERM."""

from __future__ import annotations

import asyncio

from convergent.cli._observe import (
    LogFormat,
    MetricsPort,
    log_started,
    observe,
    run_with_gauges,
)
from convergent.cli.app import BrokerUrl, DatabaseUrl, app, console, fail, run_async
from convergent.cli.relay import Imports, import_modules, stop_on_signals


@app.command()
def consume(
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    imports: Imports = None,
    metrics_port: MetricsPort = None,
    log_format: LogFormat = None,
) -> None:
    """Run every consumer the imported modules declare, each in one transaction per message."""
    observe("consume", log_format, metrics_port)
    from convergent.cli._preflight import wait_for_broker, wait_for_database
    from convergent.outbox.consumer import CONSUMERS
    from convergent.runtime import Messaging
    from convergent.store import Store

    import_modules(imports)
    if not CONSUMERS:
        raise fail("no consumers declared: pass --import with the module that declares them")

    async def go() -> int:
        store = Store(database_url)
        stop = asyncio.Event()
        stop_on_signals(stop)
        messaging = Messaging(store, broker_url, relay=False)
        try:
            if await wait_for_database(store, stop) and await wait_for_broker(
                store, broker_url, stop
            ):
                log_started("consume", database_url, broker_url)
                await run_with_gauges(messaging, store, stop, sample=metrics_port is not None)
        finally:
            await store.close()
        return messaging.handled

    handled = run_async(go())
    console.print(f"consumers stopped after handling {handled} messages")
