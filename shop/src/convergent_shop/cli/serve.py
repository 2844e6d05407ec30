"""`convergent serve`: the reference shop over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from convergent.cli._observe import LogFormat, log_started, observe
from convergent.cli.app import BrokerUrl, DatabaseUrl, app, run_server


@app.command()
def serve(
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    loops: Annotated[
        bool,
        typer.Option(
            envvar="CONVERGENT_SHOP_LOOPS",
            help="run the background work (sagas, relay, webhooks) in this process too; "
            "--no-loops when `convergent worker` processes do it",
        ),
    ] = True,
    log_format: LogFormat = None,
) -> None:
    """Serve the reference shop's HTTP API (OpenAPI docs at /docs, metrics at /metrics)."""
    observe("serve", log_format)
    from convergent.store import Store
    from convergent_shop.app import create_app

    store = Store(database_url)
    application = create_app(store, broker_url=broker_url, loops=loops)
    log_started("serve", database_url, broker_url)
    # uvicorn keeps our handler (log_config=None) so its lines are structured too
    run_server(
        application, host=host, port=port, log_level=log_level, lifespan="on", log_config=None
    )
