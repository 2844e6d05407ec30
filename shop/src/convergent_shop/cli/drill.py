"""`convergent drill`: the shop as separate processes under injected faults, then the invariants."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from convergent.cli.app import BrokerUrl, DatabaseUrl, app, console, fail, run_async

if TYPE_CHECKING:
    from convergent_shop.sim.cluster.drill import ClusterDrillOptions

T = TypeVar("T")


@app.command()
def drill(
    database_url: DatabaseUrl = None,
    broker_url: BrokerUrl = None,
    orders: Annotated[int, typer.Option(help="orders per round")] = 100,
    bookings: Annotated[int, typer.Option(help="bookings per round")] = 10,
    trades: Annotated[int, typer.Option(help="exchange orders per round")] = 10,
    clients: Annotated[
        int, typer.Option(min=1, help="concurrent clients placing orders (keeps the rate up)")
    ] = 32,
    workers: Annotated[int, typer.Option(help="worker processes (when `worker` exists)")] = 2,
    kills: Annotated[int, typer.Option(help="SIGKILLs of workers/relay per round")] = 3,
    fault_rate: Annotated[float, typer.Option(help="payment provider failure rate, 0..1")] = 0.1,
    pg_restart: Annotated[
        bool,
        typer.Option(
            help="run on a PostgreSQL of the drill's own (a temporary one on a free port) and "
            "restart it mid-round; never a shared server"
        ),
    ] = False,
    broker_outage: Annotated[
        float,
        typer.Option(
            help="seconds to stop NATS mid-round (0 = none): a nats-server of the drill's own "
            "on a free port, never a shared one"
        ),
    ] = 0,
    crash_points: Annotated[
        str, typer.Option(help="'none', 'all', or fault point names separated by commas")
    ] = "none",
    duration: Annotated[float, typer.Option(help="seconds of workload per round at most")] = 30.0,
    settle_timeout: Annotated[float, typer.Option(help="seconds to wait to settle")] = 30.0,
    report_dir: Annotated[Path, typer.Option(help="where logs and reports go")] = Path(
        "reports/drill"
    ),
    live: Annotated[bool, typer.Option(help="draw live progress")] = True,
    seed: Annotated[int | None, typer.Option(help="seed for a repeatable run")] = None,
    cluster: Annotated[
        bool,
        typer.Option(help="deploy on network-namespace hosts (root): partitions, NATS cluster"),
    ] = False,
    lease_seconds: Annotated[
        float, typer.Option(help="--cluster: the workers' lease (a partition lasts three)")
    ] = 5.0,
) -> None:
    """Kill, restart and disconnect the shop's processes under load; exit 1 on any violation."""
    if cluster:
        if database_url or broker_url or pg_restart or crash_points != "none":
            raise fail(
                "--cluster brings its own PostgreSQL and NATS cluster and its own faults: drop "
                "--database-url, --broker-url, --pg-restart and --crash-points"
            )
        from convergent_shop.sim.cluster import capabilities
        from convergent_shop.sim.cluster.drill import ClusterDrillOptions

        caps = capabilities()
        if not caps.netns:  # one line, and the caller (CI) goes on with what it can do
            console.print(f"[yellow]cluster drill not run: {caps.missing[0]}[/]", soft_wrap=True)
            return None

        return _report_or_fail(
            _run_cluster(
                ClusterDrillOptions(
                    report_dir=report_dir,
                    orders=orders,
                    bookings=bookings,
                    trades=trades,
                    workers=max(workers, 2),
                    kills=kills,
                    fault_rate=fault_rate,
                    duration=duration,
                    settle_timeout=settle_timeout,
                    lease_seconds=lease_seconds,
                    nats_outage=broker_outage or 15.0,
                    live=live,
                    seed=seed,
                )
            )
        )
    from convergent_shop.sim.drill import DrillOptions, known_fault_points, run_drill

    points: list[str | None]
    known = [] if crash_points == "none" else known_fault_points()
    if crash_points == "none":
        points = [None]
    elif crash_points == "all":
        points = [*known] or [None]
        if not known:
            console.print("[yellow]no fault points are registered yet; one plain round[/]")
    else:
        points = [p.strip() for p in crash_points.split(",") if p.strip()]
        unknown = [p for p in points if p and p.split("@")[0] not in known]
        if unknown:
            raise fail(f"unknown fault points {unknown}; known: {', '.join(known) or 'none'}")
    options = DrillOptions(
        report_dir=report_dir,
        database_url=database_url,
        broker_url=broker_url or "embedded://",
        orders=orders,
        bookings=bookings,
        trades=trades,
        clients=clients,
        workers=workers,
        kills=kills,
        fault_rate=fault_rate,
        pg_restart=pg_restart,
        broker_outage=broker_outage,
        crash_points=points,
        duration=duration,
        settle_timeout=settle_timeout,
        live=live,
        seed=seed,
    )
    _report_or_fail(run_drill(options, console))


def _run_cluster(options: ClusterDrillOptions) -> Coroutine[Any, Any, dict[str, Any]]:
    from convergent_shop.sim.cluster.drill import run_cluster_drill

    return run_cluster_drill(options, console)


def _report_or_fail(job: Coroutine[Any, Any, dict[str, Any]]) -> None:
    try:
        report = run_async(_stoppable(job))
    except RuntimeError as exc:  # a process that would not start, a lab it cannot build
        raise fail(f"{exc}") from None
    except asyncio.CancelledError:
        raise fail("stopped by SIGTERM; the shop's processes were stopped too") from None
    if not report["ok"]:
        raise fail(f"invariants violated: {', '.join(report['failed'])}")


async def _stoppable(job: Coroutine[Any, Any, T]) -> T:
    """SIGTERM cancels the drill, so its cleanup stops the processes it started (no orphans)."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await job
