"""``convergent drill``: the shop as separate processes under faults, then the invariants.

Each round starts the cluster, runs the workload while the chaos loop kills and restarts
processes, waits for the system to settle, and checks every invariant. ``crash_points``
gives one round per named fault point, with ``CONVERGENT_FAULTS`` set on workers and relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import pkgutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

import convergent
from convergent.faults import FAULT_POINTS
from convergent.store import Store
from convergent.webhooks import ALLOW_HOSTS_ENV, new_secret
from convergent_shop.notifications import SECRETS_ENV
from convergent_shop.sim.chaos import Chaos
from convergent_shop.sim.checks import CheckContext, run_checks
from convergent_shop.sim.demo import (
    Loop,
    issue_key,
    settle,
    stock_up_catalogue,
    subscribe_receiver,
)
from convergent_shop.sim.metrics import Sampler, runs_to_look_at, time_to_consistency
from convergent_shop.sim.processes import Cluster
from convergent_shop.sim.progress import LiveProgress
from convergent_shop.sim.report import build_report, write_report
from convergent_shop.sim.services import LocalNats, LocalPostgres, ServiceError
from convergent_shop.sim.trades import TradeWorkload
from convergent_shop.sim.workload import Workload, WorkloadConfig
from convergent_shop.trading import FillPoller

__all__ = ["DrillOptions", "known_fault_points", "run_drill"]


@dataclass
class DrillOptions:
    report_dir: Path = Path("reports/drill")
    database_url: str | None = None
    broker_url: str = "embedded://"
    orders: int = 100
    bookings: int = 10
    trades: int = 10
    #: concurrent clients placing orders: enough to keep the offered rate while answers are slow
    clients: int = 32
    workers: int = 2
    kills: int = 3
    fault_rate: float = 0.1
    #: restart PostgreSQL mid-round: a PostgreSQL the drill starts itself (``database_url``
    #: must be None), never a shared one
    pg_restart: bool = False
    #: seconds NATS is down mid-round: a nats-server the drill starts itself (``broker_url``
    #: must be the default), never a shared one
    broker_outage: float = 0.0
    crash_points: list[str | None] = field(default_factory=lambda: [None])
    duration: float = 30.0
    #: seconds the orders are spread over (default: 80% of ``duration``); the workload stops
    #: at ``duration`` whether or not every order was placed
    spread: float | None = None
    settle_timeout: float = 30.0
    live: bool = True
    seed: int | None = None


def known_fault_points() -> list[str]:
    """Every fault point the package declares (importing its modules registers them)."""
    for module in pkgutil.walk_packages(convergent.__path__, "convergent."):
        if ".cli" in module.name or module.name.endswith("__main__"):
            continue
        with contextlib.suppress(Exception):  # a part that does not import yet has no points
            importlib.import_module(module.name)
    return sorted(FAULT_POINTS)


async def _ledger(psp_url: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=psp_url, timeout=10) as http:
        try:
            answer = await http.get("/ledger")
        except httpx.HTTPError:
            return None
    return dict(answer.json()) if answer.status_code == 200 else None


@dataclass
class _Servers:
    """The servers the drill started for its restart and outage (None: not asked for)."""

    database: LocalPostgres | None = None
    broker: LocalNats | None = None


async def _round(
    options: DrillOptions,
    point: str | None,
    db_url: str,
    console: Console,
    servers: _Servers,
) -> dict[str, Any]:
    name = point or "no-crash-point"
    workdir = options.report_dir / name
    secret = new_secret()  # the sample receiver's, known to the serve process from the start
    cluster = Cluster(
        database_url=db_url,
        broker_url=options.broker_url,
        workdir=workdir,
        workers=options.workers,
        psp_fault_rate=options.fault_rate,
        worker_faults=point,
        seed=options.seed,
        extra_env={ALLOW_HOSTS_ENV: "127.0.0.1", SECRETS_ENV: secret},
    )
    store = Store(db_url)
    stop = asyncio.Event()
    try:
        await cluster.start()
        await cluster.wait_started()
        await stock_up_catalogue(store)
        await subscribe_receiver(store, f"{cluster.shop_url}/notifications/webhook", secret)
        workload = Workload(
            cluster.shop_url,
            WorkloadConfig(
                orders=options.orders,
                bookings=options.bookings,
                seed=options.seed,
                concurrency=options.clients,
                run_id=f"{name}-{int(time.time())}",
                # orders keep coming while the faults land, however fast the machine is
                spread=options.spread if options.spread is not None else options.duration * 0.8,
                api_key=await issue_key(store, "drill-client"),
            ),
        )
        trades = TradeWorkload(
            store, cluster.exchange_url, options.trades, workload.config.run_id, options.seed
        )
        sampler = Sampler(store, lambda: workload.stats.as_dict() | trades.stats.as_dict())
        poller = FillPoller(store, cluster.exchange_url, interval=1.0)
        chaos = Chaos(
            cluster,
            options.duration,
            kills=options.kills,
            database=servers.database,
            broker=servers.broker,
            broker_outage=options.broker_outage,
            seed=options.seed,
        )
        loops: list[Loop] = [sampler, poller]
        if options.live:
            loops.append(LiveProgress(sampler, f"convergent drill: {name}", console))
        tasks = [asyncio.create_task(loop.run(stop)) for loop in loops]
        faults = asyncio.create_task(chaos.run(stop))
        supervisor = asyncio.create_task(cluster.supervise(stop))
        stop_workload = asyncio.Event()
        load = asyncio.gather(workload.run(stop_workload), trades.run(stop_workload))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(load), options.duration)
        stop_workload.set()
        await load
        await faults  # every planned kill, restart and outage happens before the checks
        settled = await settle(store, workload.stats.accepted, options.settle_timeout)
        await sampler.sample()
        stop.set()
        await asyncio.gather(*tasks, supervisor)
        ledger = await _ledger(cluster.psp_url)
        checks = await run_checks(
            CheckContext(store, ledger, workload.stats.orders_by_key, workload.stats.statuses)
        )
        return build_report(
            title=f"convergent drill: {name}",
            checks=checks,
            workload={
                **workload.stats.as_dict(),
                **trades.stats.as_dict(),
                "fills_recovered_by_polling": poller.recovered,
                "settled_in": settled,
            },
            samples=sampler.samples,
            consistency=await time_to_consistency(store),
            settings={"crash_point": point, "database_url": db_url},
            extra={
                "events": chaos.events,
                "restarts": cluster.restarts(),
                "runs_to_look_at": await runs_to_look_at(store),
                "console_url": "http://127.0.0.1:8100",
                "console_hint": (
                    " (the drill's own PostgreSQL is removed after the drill)"
                    if servers.database is not None
                    else f" served by `convergent console --database-url {db_url}`"
                ),
            },
        )
    finally:
        stop.set()
        cluster.stop()
        await store.close()


async def _round_database(options: DrillOptions, index: int, point: str | None) -> str:
    """A fresh, migrated database for the round: each round's checks see only its own orders
    (and its provider's ledger). One round uses the given database; more rounds each create
    ``<database>_r<N>`` beside it."""
    several = len(options.crash_points) > 1
    if options.database_url is None:
        where = options.report_dir / (point or "no-crash-point") if several else options.report_dir
        where.mkdir(parents=True, exist_ok=True)
        for stale in where.glob("shop.db*"):
            stale.unlink()
        url = f"sqlite+aiosqlite:///{where / 'shop.db'}"
    elif several:
        async with Store(options.database_url) as admin:
            name = Path(admin.url.database or "shop").stem
            url = await admin.create_database(f"{name}_r{index}")
    else:
        url = options.database_url
    store = Store(url)
    try:
        await store.migrate()
    finally:
        await store.close()
    return url


@contextlib.asynccontextmanager
async def _own_servers(options: DrillOptions) -> Any:
    """Start the PostgreSQL and the nats-server the restart and the outage act on; the options
    with their URLs; both servers stopped and removed after the rounds."""
    if options.pg_restart and options.database_url is not None:
        raise ServiceError(
            "--pg-restart restarts a PostgreSQL the drill starts itself, never yours: "
            "drop --database-url"
        )
    if options.broker_outage and options.broker_url != "embedded://":
        raise ServiceError(
            "--broker-outage stops a nats-server the drill starts itself, never yours: "
            "drop --broker-url"
        )
    servers = _Servers()
    try:
        if options.pg_restart:
            servers.database = LocalPostgres(options.report_dir / "postgres.log")
            await servers.database.start()
            options = replace(options, database_url=await servers.database.create_database("shop"))
        if options.broker_outage:
            servers.broker = LocalNats(options.report_dir / "nats-server.log")
            await servers.broker.start()
            options = replace(options, broker_url=servers.broker.url)
        yield options, servers
    finally:
        if servers.broker is not None:
            await servers.broker.close()
        if servers.database is not None:
            await servers.database.stop()


async def run_drill(options: DrillOptions, console: Console | None = None) -> dict[str, Any]:
    """Run every round and write one report; ``report["ok"]`` is False on any violation."""
    console = console or Console()
    options.report_dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    async with _own_servers(options) as (options, servers):
        for index, point in enumerate(options.crash_points):
            db_url = await _round_database(options, index, point)
            result = await _round(options, point, db_url, console, servers)
            rounds.append(result)
            verdict = "[green]ok[/]" if result["ok"] else f"[red]violated: {result['failed']}[/]"
            console.print(f"round {point or 'no-crash-point'}: {verdict}")
    last = rounds[-1]
    failed = sorted(
        {f"{r['settings']['crash_point'] or 'base'}:{n}" for r in rounds for n in r["failed"]}
    )
    report = {
        **last,
        "title": "convergent drill",
        "ok": not failed,
        "failed": failed,
        "settings": {**asdict(options), "report_dir": str(options.report_dir)},
        "rounds": [{k: v for k, v in r.items() if k != "samples"} for r in rounds],
    }
    json_path, html_path = write_report(report, options.report_dir)
    console.print(f"report: {html_path} (JSON: {json_path})")
    return report
