"""`convergent console`: the operator console, served on its own."""

from __future__ import annotations

from typing import Annotated

import typer

from convergent import eventloop
from convergent.cli.app import BrokerUrl, DatabaseUrl, app, console
from convergent.cli.relay import Imports, import_modules


@app.command("console")
def console_command(
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8100,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    migrate: Annotated[bool, typer.Option(help="apply convergent's migrations first")] = True,
    refresh_seconds: Annotated[
        float | None,
        typer.Option(help="seconds between Overview updates (CONVERGENT_CONSOLE_REFRESH_SECONDS)"),
    ] = None,
    imports: Imports = None,
) -> None:
    """Serve the operator console (log in with a key from `convergent keys create NAME --admin`).

    --import the modules that register dead-letter retry actions or console actions of your own.
    """
    from convergent.cli.app import fail, run_async, run_server
    from convergent.errors import MissingExtra
    from convergent.store import Store

    try:
        import uvicorn  # noqa: F401 (the console extra: run_server needs it)

        from convergent.console import create_console
    except MissingExtra as exc:
        raise fail(exc.message) from None
    except ImportError:
        raise fail(str(MissingExtra("console", "convergent console"))) from None

    import_modules(imports)
    store = Store(database_url)
    if migrate:
        run_async(store.migrate())
        # the engine's pool belongs to the loop that made it; uvicorn runs its own loop
        eventloop.run(store.engine.dispose())
    console.print(f"console on [bold]http://{host}:{port}/[/] ({store!r})")
    run_server(
        create_console(store, broker_url=broker_url, refresh_seconds=refresh_seconds),
        host=host,
        port=port,
        log_level=log_level,
    )
