"""``convergent demo``: the whole shop in one process, a faulty provider and a workload.

Background work runs as *loops*: objects with ``async run(stop: asyncio.Event)``. The demo
starts the sampler and the live view itself; in-process workers, relays and sweepers join by
``register_loop(factory)``, where ``factory(ctx)`` builds a loop from the running demo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from convergent.errors import StoreUnavailable
from convergent.store import Store
from convergent_shop.sim.checks import CheckContext, run_checks
from convergent_shop.sim.metrics import (
    Sampler,
    read_figures,
    runs_to_look_at,
    time_to_consistency,
    time_to_fill,
)
from convergent_shop.sim.progress import LiveProgress
from convergent_shop.sim.report import build_report, write_report
from convergent_shop.sim.servers import free_port, serve_app
from convergent_shop.sim.trades import TradeWorkload
from convergent_shop.sim.workload import WorkloadConfig
from convergent_shop.sim.workload_process import WorkloadProcess

__all__ = [
    "DEMO_LOOPS",
    "DemoContext",
    "DemoOptions",
    "Loop",
    "register_loop",
    "run_demo",
    "settle",
    "stock_up_catalogue",
]

STOCK_PER_SKU = 100_000


class Loop(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class DemoContext:
    store: Store
    psp_store: Store
    shop_url: str
    psp_url: str
    exchange_url: str


#: factories of the extra in-process loops (workers, relay, sweeper) the demo runs
DEMO_LOOPS: list[Callable[[DemoContext], Loop]] = []


def register_loop(factory: Callable[[DemoContext], Loop]) -> None:
    DEMO_LOOPS.append(factory)


@dataclass
class DemoOptions:
    report_dir: Path = Path("reports/demo")
    database_url: str | None = None
    duration: float = 30.0
    orders: int = 200
    bookings: int = 20
    customers: int = 10
    trades: int = 20
    fault_rate: float = 0.1
    settle_timeout: float = 10.0
    port: int = 8000
    keep_serving: bool = False
    live: bool = True
    seed: int | None = None
    loops: list[Loop] = field(default_factory=list)


def _port_or_free(port: int) -> int:
    if port == 0:
        return free_port()
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


async def settle(store: Store, expected: int, timeout: float) -> float | None:
    """Wait until ``expected`` orders are final, none is in flight (a client that gave up may
    have left one it never heard of) and no trade is open; seconds, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            figures = await read_figures(store)
        except StoreUnavailable:  # restarting under a drill: ask again
            figures = {}
        if (
            figures.get("converged", 0) >= expected
            and not figures.get("orders_in_flight")
            and not figures.get("trades_open")
        ):
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return None


async def stock_up_catalogue(store: Store) -> None:
    from convergent_shop import inventory
    from convergent_shop.sim.workload import SKUS

    async with store.begin() as conn:
        for sku in SKUS:
            await inventory.stock_up(conn, sku, STOCK_PER_SKU)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (the in-process shop reads them), then restore."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


#: what the sample receiver acts on, as a customer's system would subscribe: where an order
#: ended up, and every booking change (a moved or cancelled booking must reach it)
RECEIVER_EVENTS = ("order.completed", "order.cancelled", "order.failed", "booking.*")


async def subscribe_receiver(
    store: Store,
    url: str,
    secret: str | None = None,
    event_types: Sequence[str] | None = RECEIVER_EVENTS,
) -> str:
    """Point the shop's callbacks at its own sample receiver, which verifies and records them
    (``event_types``: the filter of the endpoint; None for every event)."""
    from convergent.webhooks import AllowList, create_endpoint
    from convergent_shop.notifications import SECRETS_ENV

    loopback = AllowList.parse(["127.0.0.1"])  # the sample receiver is ours, on this machine
    async with store.begin() as conn:
        _, secret = await create_endpoint(
            conn,
            url,
            event_types=event_types,
            description="sample receiver",
            secret=secret,
            allow=loopback,
        )
    os.environ[SECRETS_ENV] = secret
    return secret


async def run_demo(options: DemoOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the demo end to end and write its report; returns the report."""
    console = console or Console()
    report_dir = options.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    stale_files = "*.db*" if options.database_url is None else "psp.db*"
    for stale in report_dir.glob(stale_files):  # each run starts from empty books
        stale.unlink()
    db_url = options.database_url or f"sqlite+aiosqlite:///{report_dir / 'shop.db'}"
    store, psp_store = Store(db_url), Store(f"sqlite+aiosqlite:///{report_dir / 'psp.db'}")
    try:
        async with _servers(options, store, psp_store) as ctx:
            console.print(
                f"shop on [bold]{ctx.shop_url}[/] (API docs at /docs), "
                f"psp on {ctx.psp_url}, exchange on {ctx.exchange_url}"
            )
            report = await _load_settle_check(options, ctx, console)
            json_path, html_path = write_report(report, report_dir)
            _print_summary(console, report, json_path, html_path)
            operator_key = await _operator_key(store)
            console.print(
                f"console: [bold]{ctx.shop_url}/console[/] (admin key, shown once: {operator_key})"
            )
            if options.keep_serving:
                console.print("serving until Ctrl-C")
                await asyncio.Event().wait()
            return report
    finally:
        await store.close()
        await psp_store.close()


async def _operator_key(store: Store) -> str:
    """An admin key for the console (a new name each run, since a database given with
    --database-url keeps the earlier runs' keys)."""
    return await issue_key(store, "demo-operator", admin=True)


async def issue_key(store: Store, prefix: str, *, admin: bool = False) -> str:
    """A new API key named ``prefix-<random>``, issued as `convergent keys create` does."""
    from convergent.auth import create_key

    async with store.begin() as conn:
        _, secret = await create_key(conn, f"{prefix}-{secrets.token_hex(3)}", admin=admin)
    return secret


@contextlib.asynccontextmanager
async def _servers(
    options: DemoOptions, store: Store, psp_store: Store
) -> AsyncIterator[DemoContext]:
    """The shop on its loopback port; the provider and the exchange, the shop's outside world,
    in a process of their own (as they would be), so the shop's process has its core to itself."""
    from convergent.webhooks import ALLOW_HOSTS_ENV
    from convergent_shop.app import create_app
    from convergent_shop.notifications import SECRETS_ENV
    from convergent_shop.workflows import PSP_URL_ENV

    shop_port = _port_or_free(options.port)
    from convergent_shop.sim.processes import provider_process

    provider = provider_process(
        psp_store.url.render_as_string(hide_password=False),  # the ledger psp_store reads
        options.report_dir / "psp.log",
        options.fault_rate,
        seed=options.seed,
        fills_to=f"http://127.0.0.1:{shop_port}/trading/fills",
        fill_interval_ms=100,
    )
    async with provider as psp_url:
        # the saga's steps call the provider here; callbacks go to a loopback receiver
        settings = {PSP_URL_ENV: psp_url, ALLOW_HOSTS_ENV: "127.0.0.1", SECRETS_ENV: ""}
        with environment(settings):
            async with serve_app(create_app(store), port=shop_port) as shop_url:
                await stock_up_catalogue(store)
                await subscribe_receiver(store, f"{shop_url}/notifications/webhook")
                yield DemoContext(store, psp_store, shop_url, psp_url, f"{psp_url}/exchange")


async def _load_settle_check(
    options: DemoOptions, ctx: DemoContext, console: Console
) -> dict[str, Any]:
    from convergent_shop.psp import read_ledger
    from convergent_shop.trading import FillPoller

    store = ctx.store
    config = WorkloadConfig(
        orders=options.orders,
        bookings=options.bookings,
        customers=options.customers,
        # a steady arrival over half the time, with enough clients to catch up when the
        # machine is busy (the clients run in a process of their own, as real ones do)
        concurrency=32,
        spread=options.duration / 2,
        seed=options.seed,
        api_key=await issue_key(store, "demo-client"),
    )
    workload = WorkloadProcess(ctx.shop_url, config, options.report_dir / "workload.log")
    trades = TradeWorkload(store, ctx.exchange_url, options.trades, config.run_id, options.seed)
    sampler = Sampler(store, lambda: workload.stats.as_dict() | trades.stats.as_dict())
    poller = FillPoller(store, ctx.exchange_url, interval=1.0)
    loops: list[Loop] = [sampler, poller, *options.loops, *(f(ctx) for f in DEMO_LOOPS)]
    if options.live:
        loops.append(LiveProgress(sampler, "convergent demo", console))
    stop_loops, stop_load = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(loop.run(stop_loops)) for loop in loops]
    started = time.monotonic()
    try:
        load = asyncio.gather(workload.run(stop_load), trades.run(stop_load))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(load), options.duration)
        stop_load.set()
        await load
        settled = await settle(store, workload.final.accepted, options.settle_timeout)
        await sampler.sample()
    finally:
        stop_loops.set()
        await asyncio.gather(*tasks)
    async with ctx.psp_store.read() as conn:
        ledger = await read_ledger(conn)
    checks = await run_checks(
        CheckContext(store, ledger, workload.final.orders_by_key, workload.final.statuses)
    )
    return build_report(
        title="convergent demo",
        checks=checks,
        workload={
            **workload.final.as_dict(),
            **trades.stats.as_dict(),
            "fills_recovered_by_polling": poller.recovered,
            "seconds": round(time.monotonic() - started, 2),
            "settled_in": None if settled is None else round(settled, 2),
        },
        samples=sampler.samples,
        consistency=await time_to_consistency(store),
        settings={
            **{k: v for k, v in asdict(options).items() if k != "loops"},
            "database_url": store.url.render_as_string(hide_password=True),
        },
        extra={
            "psp_ledger": {k: v for k, v in ledger.items() if k != "per_key"},
            "trade_time_to_fill": await time_to_fill(store),
            "runs_to_look_at": await runs_to_look_at(store),
            "console_url": f"{ctx.shop_url}/console",
            "console_hint": " (while `convergent demo --keep-serving` runs)",
        },
    )


def _print_summary(
    console: Console, report: dict[str, Any], json_path: Path, html_path: Path
) -> None:
    for check in report["checks"]:
        colour = {"pass": "green", "fail": "red", "skipped": "dim"}[check["status"]]
        console.print(f"  [{colour}]{check['status']:>7}[/] {check['name']}: {check['detail']}")
    console.print(f"report: {html_path} (JSON: {json_path})")
