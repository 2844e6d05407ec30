"""`convergent demo`: the shop, a faulty payment provider and a workload, in one process."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from convergent.cli.app import DatabaseUrl, app, console, fail, run_async


@app.command()
def demo(
    database_url: DatabaseUrl = None,
    duration: Annotated[float, typer.Option(help="seconds of workload at most")] = 30.0,
    orders: Annotated[int, typer.Option(help="orders to place")] = 200,
    bookings: Annotated[int, typer.Option(help="bookings to make")] = 20,
    customers: Annotated[int, typer.Option(help="customers to update")] = 10,
    trades: Annotated[int, typer.Option(help="exchange orders, whose fills get lost")] = 20,
    fault_rate: Annotated[float, typer.Option(help="payment provider failure rate, 0..1")] = 0.1,
    settle_timeout: Annotated[float, typer.Option(help="seconds to wait to settle")] = 60.0,
    port: Annotated[int, typer.Option(help="shop port (a free one if taken)")] = 8000,
    report_dir: Annotated[Path, typer.Option(help="where report.json/.html go")] = Path(
        "reports/demo"
    ),
    keep_serving: Annotated[bool, typer.Option(help="keep serving after the report")] = False,
    live: Annotated[bool, typer.Option(help="draw live progress")] = True,
    strict: Annotated[
        bool, typer.Option(help="exit 1 if any invariant is violated (--no-strict: report only)")
    ] = True,
    seed: Annotated[int | None, typer.Option(help="seed for a repeatable run")] = None,
) -> None:
    """Run the reference shop under load with injected faults and report what converged.

    Without --database-url everything lives in REPORT_DIR (SQLite), recreated each run.
    """
    from convergent_shop.sim.demo import DemoOptions, run_demo

    if not 0 <= fault_rate <= 1:
        raise fail("--fault-rate must be between 0 and 1, e.g. --fault-rate 0.1")
    options = DemoOptions(
        report_dir=report_dir,
        database_url=database_url,
        duration=duration,
        orders=orders,
        bookings=bookings,
        customers=customers,
        trades=trades,
        fault_rate=fault_rate,
        settle_timeout=settle_timeout,
        port=port,
        keep_serving=keep_serving,
        live=live,
        seed=seed,
    )
    report_dir.mkdir(parents=True, exist_ok=True)
    with _log_to(report_dir / "demo.log"):
        report = run_async(run_demo(options, console))
    console.print(f"log: {report_dir / 'demo.log'}")
    if strict and not report["ok"]:
        raise fail(f"invariants violated: {', '.join(report['failed'])}")


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Send the shop's log lines to a file for the demo: the console shows progress and the
    report; the runs a client's cancel or a declined card ended are in the log, not in the way."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("convergent")
    before = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
        handler.close()
