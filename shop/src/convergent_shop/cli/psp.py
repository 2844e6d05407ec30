"""`convergent psp`: the fake payment provider, with the fake exchange under /exchange."""

from __future__ import annotations

from typing import Annotated

import typer

from convergent.cli.app import app, run_server

Rate = Annotated[float | None, typer.Option(min=0.0, max=1.0, show_default=False)]


@app.command()
def psp(
    database_url: Annotated[
        str,
        typer.Option(
            envvar="CONVERGENT_PSP_DATABASE_URL",
            help="the provider's own ledger, never the shop's database",
        ),
    ] = "sqlite+aiosqlite:///./psp.db",
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8100,
    fault_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="overall failure rate, split over the 3 modes")
    ] = 0.0,
    lost_response_rate: Rate = None,
    error_before_rate: Rate = None,
    error_after_rate: Rate = None,
    latency_ms: Annotated[int, typer.Option(help="added latency per call")] = 0,
    seed: Annotated[int | None, typer.Option(help="seed for repeatable faults")] = None,
    exchange_callback_url: Annotated[
        str | None, typer.Option(help="where the exchange POSTs fills")
    ] = None,
    lost_fill_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    duplicate_fill_rate: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    fill_interval_ms: Annotated[
        int, typer.Option(min=0, max=60_000, help="the exchange's pause between fills")
    ] = 50,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve the fake payment provider (and the fake exchange under /exchange).

    Faults can be changed while it runs with PUT /faults and PUT /exchange/config.
    """
    from convergent.store import Store
    from convergent_shop.exchange import Exchange, ExchangeConfig, create_exchange_app
    from convergent_shop.psp import Faults, create_psp_app

    faults = Faults.spread(fault_rate, seed=seed, latency_ms=latency_ms)
    overrides = {
        "lost_response_rate": lost_response_rate,
        "error_before_rate": error_before_rate,
        "error_after_rate": error_after_rate,
    }
    faults = faults.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    exchange = Exchange(
        ExchangeConfig(
            callback_url=exchange_callback_url,
            lost_fill_rate=lost_fill_rate,
            duplicate_fill_rate=duplicate_fill_rate,
            fill_interval_ms=fill_interval_ms,
            seed=seed,
        )
    )
    application = create_psp_app(Store(database_url), faults)
    application.mount("/exchange", create_exchange_app(exchange))
    run_server(application, host=host, port=port, log_level=log_level, lifespan="on")
