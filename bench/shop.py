"""The shop's order saga under a fixed offered load: time to consistency against its floor.

Layouts:
- ``sqlite``: the demo's layout, everything in one process on SQLite and the embedded log;
- ``pg``: the drill's layout, `serve`, workers and the relay as separate processes on
  PostgreSQL + NATS (no kills).

Each layout runs with no provider faults, then with 10% faults. In the same run the floor is
measured: the saga's work as bare calls at the same offered load (one transaction per step
against the same database, the provider's authorize and capture over HTTP), with no engine, no
outbox, no callbacks. Prints orders/s achieved, time to consistency p50/p95/p99, and the ratio of
the saga's p50 to the floor's.

    python bench/shop.py [--quick] [--rate 50] [--orders 500] [--layouts sqlite,pg] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from convergent import eventloop
from convergent.errors import TransientError
from convergent.store import Store

PG_ADMIN = os.environ.get(
    "CONVERGENT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("CONVERGENT_TEST_NATS_URL", "nats://127.0.0.1:4222")

floor_table = sa.Table(
    "bench_floor_orders",
    sa.MetaData(),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("payment", sa.String(64), nullable=True),
)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def line(label: str, figures: dict[str, Any]) -> str:
    cpu = ""
    if "cpu_ms" in figures:
        split = figures["cpu_split"]  # (label, ms) of this process and of its children
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in split)
        cpu = f", {figures['cpu_ms']:.1f} ms CPU/order: {parts}"
    return (
        f"{label:34s} {figures['rate']:6.1f} orders/s  p50 {figures['p50'] * 1e3:8.1f} ms  "
        f"p95 {figures['p95'] * 1e3:8.1f} ms  p99 {figures['p99'] * 1e3:8.1f} ms  "
        f"(final {figures['count']}/{figures['orders']}{cpu})"
    )


def cpu_seconds() -> tuple[float, float]:
    """CPU of this process, and of its children that have ended (the layout's processes, the
    demo's clients): not the database's or the broker's."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def cpu_figures(before: tuple[float, float], orders: int, names: tuple[str, str]) -> dict[str, Any]:
    """CPU per order in all, and split between this process and its children (``names``)."""
    own, children = (now - then for now, then in zip(cpu_seconds(), before, strict=True))
    per = 1000 / orders
    return {
        "cpu_ms": (own + children) * per,
        "cpu_split": [(names[0], own * per), (names[1], children * per)],
    }


def figures_of(ttc: list[float], orders: int, seconds: float) -> dict[str, Any]:
    return {
        "orders": orders,
        "count": len(ttc),
        "rate": len(ttc) / seconds if seconds else 0.0,
        "p50": pct(ttc, 50),
        "p95": pct(ttc, 95),
        "p99": pct(ttc, 99),
    }


# -- the saga, demo layout ---------------------------------------------------------------------


async def saga_sqlite(orders: int, rate: float, fault_rate: float, workdir: Path) -> dict[str, Any]:
    from convergent_shop.sim.demo import DemoOptions, run_demo

    spread = orders / rate
    options = DemoOptions(
        report_dir=workdir,
        duration=2 * spread,  # the demo spreads its orders over half its duration
        orders=orders,
        bookings=0,
        customers=0,
        trades=0,
        fault_rate=fault_rate,
        settle_timeout=60,
        port=0,
        live=False,
        seed=7,
    )
    cpu = cpu_seconds()
    report = await run_demo(options, _quiet_console())
    ttc = report["time_to_consistency"]["values"]
    # achieved: orders made final over the time from the first order sent to the last settled
    figures = figures_of(ttc, orders, max(spread, report["workload"]["seconds"]))
    return {**figures, **cpu_figures(cpu, orders, ("shop", "clients and provider"))}


def _quiet_console() -> Any:
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), width=120)


# -- the saga, drill layout --------------------------------------------------------------------


async def saga_pg(
    orders: int, rate: float, fault_rate: float, workdir: Path, workers: int = 2
) -> dict[str, Any]:
    from convergent_shop.sim.drill import DrillOptions, run_drill

    url = await _fresh_pg("convergent_bench_shop")
    spread = orders / rate
    options = DrillOptions(
        report_dir=workdir,
        database_url=url,
        broker_url=NATS_URL,
        orders=orders,
        bookings=0,
        trades=0,
        clients=max(32, int(rate)),  # enough that the clients keep the offered rate
        workers=workers,
        kills=0,
        fault_rate=fault_rate,
        spread=spread,
        duration=spread + 120,  # time enough to place every order when the shop falls behind
        settle_timeout=60,
        live=False,
        seed=7,
    )
    cpu = cpu_seconds()
    report = await run_drill(options, _quiet_console())
    round_ = report["rounds"][0] if report.get("rounds") else report
    ttc = round_["time_to_consistency"]["values"]
    # achieved: orders made final over the time from the first order to the final sample
    figures = figures_of(ttc, orders, max(spread, round_["final"]["t"]))
    # this process is the drill's clients (and its sampler); the layout runs in its children
    return {**figures, **cpu_figures(cpu, orders, ("clients", "serve, workers, relay, provider"))}


async def _fresh_pg(name: str) -> str:
    admin = Store(PG_ADMIN)
    try:
        async with admin.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


# -- the floor ---------------------------------------------------------------------------------


async def floor(
    database_url: str, orders: int, rate: float, fault_rate: float, workdir: Path
) -> dict[str, Any]:
    """The saga's work as bare calls: reserve, authorize, ship, capture-and-complete, each one
    transaction or one provider call, sequential per order, orders arriving at ``rate``."""
    from convergent_shop.psp_client import PspClient
    from convergent_shop.sim.processes import provider_process

    # enough connections for the orders in flight at once; past that, orders wait their turn
    # (counted in their time) rather than fail on the pool's timeout
    store = Store(database_url, pool_size=20, max_overflow=40)
    turns = asyncio.Semaphore(60)
    async with store.begin() as conn:
        await conn.run_sync(floor_table.metadata.drop_all)
        await conn.run_sync(floor_table.metadata.create_all)
    latencies: list[float] = []

    async def one(order_id: str, psp: PspClient) -> None:
        began = time.perf_counter()
        async with turns:
            await steps(order_id, psp)
        latencies.append(time.perf_counter() - began)

    async def steps(order_id: str, psp: PspClient) -> None:
        async with store.begin() as conn:
            await conn.execute(floor_table.insert().values(id=order_id, state="reserved"))
        made: dict[str, Any] = {}
        for attempt in range(20):  # the saga retries a faulty provider too
            try:
                made = await psp.authorize(
                    f"{order_id}:auth", amount="20.00", currency="EUR", reference=order_id
                )
                break
            except TransientError:
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        async with store.begin() as conn:
            await conn.execute(
                floor_table.update()
                .where(floor_table.c.id == order_id)
                .values(state="authorized", payment=made["id"])
            )
        async with store.begin() as conn:
            await conn.execute(
                floor_table.update().where(floor_table.c.id == order_id).values(state="shipped")
            )
        for attempt in range(20):
            try:
                await psp.capture(made["id"], f"{order_id}:capture")
                break
            except TransientError:
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        async with store.begin() as conn:
            await conn.execute(
                floor_table.update().where(floor_table.c.id == order_id).values(state="completed")
            )

    # the provider in a process of its own, as the demo runs it
    ledger = f"sqlite+aiosqlite:///{workdir / 'floor-psp.db'}"
    provider = provider_process(ledger, workdir / "floor-psp.log", fault_rate, seed=7)
    try:
        async with provider as url:
            psp = PspClient(url, timeout=2.0)
            began = time.perf_counter()
            tasks = []
            for i in range(orders):
                await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one(str(uuid.uuid4()), psp)))
            await asyncio.gather(*tasks)
            seconds = time.perf_counter() - began
            await psp.aclose()
    finally:
        await store.close()
    return figures_of(latencies, orders, seconds)


# -- orchestration -----------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 orders per case")
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="orders/s offered (default: 50 on SQLite, 200 on PostgreSQL)",
    )
    parser.add_argument("--layouts", default="sqlite,pg")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes in the pg layout (the drill's 2)"
    )
    args = parser.parse_args()
    orders = 100 if args.quick else args.orders
    layouts = args.layouts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # the engines' warnings (a cancelled order's saga, say) go to a file, not the figures
        log_file = Path(tempfile.gettempdir()) / "convergent-bench-shop.log"
        logging.basicConfig(filename=log_file, level=logging.WARNING, force=True)
        for layout in layouts:
            rate = args.rate or (50.0 if layout == "sqlite" else 200.0)
            print(f"== {layout}: {orders} orders offered at {rate:.0f}/s")
            for fault_rate in (0.0, 0.1):
                case = work / f"{layout}-{fault_rate}"
                case.mkdir()
                if layout == "sqlite":
                    base = await floor(
                        f"sqlite+aiosqlite:///{case / 'floor.db'}", orders, rate, fault_rate, case
                    )
                    saga = await saga_sqlite(orders, rate, fault_rate, case)
                else:
                    base = await floor(
                        await _fresh_pg("convergent_bench_floor"), orders, rate, fault_rate, case
                    )
                    saga = await saga_pg(orders, rate, fault_rate, case, args.workers)
                label = f"faults {fault_rate:.0%}"
                print(line(f"  floor (bare calls), {label}", base))
                print(line(f"  saga, {label}", saga))
                ratio = saga["p50"] / base["p50"] if base["p50"] else float("nan")
                print(f"  saga p50 / floor p50 = {ratio:.1f}")


if __name__ == "__main__":
    eventloop.tune_gc()  # as the CLI's processes do
    eventloop.run(main())
