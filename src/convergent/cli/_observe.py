"""What every long-running command (worker, relay, consume, serve) sets up first: structured
logs, a Prometheus endpoint when asked, OpenTelemetry traces when ``OTEL_*`` configures them,
and one line saying what the process connects to."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from convergent import eventloop, settings
from convergent.loops import Loop
from convergent.store import Store
from convergent.telemetry import StoreGauges
from convergent.telemetry.logging import configure_logging
from convergent.telemetry.metrics import serve_metrics
from convergent.telemetry.tracing import configure_tracing

__all__ = ["LogFormat", "MetricsPort", "log_started", "observe", "run_with_gauges"]

log = logging.getLogger("convergent.cli")

LogFormat = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="log lines as kv (key=value) or json [env CONVERGENT_LOG_FORMAT; default kv]",
        show_default=False,
    ),
]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        help="serve Prometheus metrics at http://0.0.0.0:PORT/metrics",
        show_default=False,
    ),
]


def observe(service: str, log_format: str | None = None, metrics_port: int | None = None) -> None:
    """Logs in the chosen format, metrics on ``metrics_port`` if given, traces if ``OTEL_*``
    asks for them (``service``: the command, named in the traces as ``convergent-<service>``)."""
    config = settings.load(log_format=log_format)
    configure_logging(config.log_format, config.log_level)
    if metrics_port is not None:
        serve_metrics(metrics_port)
        log.info("serving metrics", extra={"metrics_port": metrics_port})
    if configure_tracing(f"convergent-{service}"):
        log.info("exporting traces", extra={"otlp_endpoint": _otlp_endpoint()})


def _otlp_endpoint() -> str:
    env = settings.otel_environment()
    return (
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_TRACES_EXPORTER", "")
    )


def log_started(process: str, database_url: str | None, broker_url: str | None) -> None:
    """One line with what this process is connected to (passwords masked)."""
    log.info(
        "%s started",
        process,
        extra={
            "service": process,
            "database": settings.mask(settings.database_url(database_url)),
            "broker": settings.mask(settings.broker_url(broker_url)),
            "event_loop": eventloop.loop_name(),
        },
    )


async def run_with_gauges(main: Loop, store: Store, stop: asyncio.Event, *, sample: bool) -> None:
    """Run ``main``; with metrics served, sample the database's backlogs beside it."""
    loops = [main.run(stop)]
    if sample:
        loops.append(StoreGauges(store).run(stop))
    await asyncio.gather(*loops)
