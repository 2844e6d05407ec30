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
import contextlib
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
        split = figures["cpu_split"]  # (label, ms) of this process, its children, the database
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in split)
        cpu = f", {figures['cpu_ms']:.1f} ms CPU/order: {parts}"
    return (
        f"{label:34s} {figures['rate']:6.1f} orders/s  p50 {figures['p50'] * 1e3:8.1f} ms  "
        f"p95 {figures['p95'] * 1e3:8.1f} ms  p99 {figures['p99'] * 1e3:8.1f} ms  "
        f"(final {figures['count']}/{figures['orders']}{cpu})"
    )


def cpu_seconds() -> tuple[float, float]:
    """CPU of this process, and of its children that have ended (the demo's clients)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def _processes() -> dict[int, tuple[int, str, list[int]]]:
    """Every process: its parent, its name, and its utime, stime, cutime, cstime (in ticks),
    from one pass over ``/proc``."""
    found: dict[int, tuple[int, str, list[int]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        name = text[text.index("(") + 1 : text.rindex(")")]
        found[int(stat.parent.name)] = (int(fields[1]), name, [int(f) for f in fields[11:15]])
    return found


def _is_postgres(name: str) -> bool:
    return name in ("postgres", "postmaster") or name.startswith("postgres:")


def postgres_cpu(processes: dict[int, tuple[int, str, list[int]]]) -> float | None:
    """Seconds of CPU of the local PostgreSQL: its live processes, and the backends that have
    ended (counted in their postmaster's children's time). Every database's, not only ours."""
    total, seen = 0, False
    for parent, name, times in processes.values():
        if not _is_postgres(name):
            continue
        seen = True
        total += times[0] + times[1]  # utime, stime
        if parent == 1 or not _is_postgres(processes.get(parent, (0, "", []))[1]):
            total += times[2] + times[3]  # the postmaster: its ended children
    return total / os.sysconf("SC_CLK_TCK") if seen else None


def _tree_cpu(processes: dict[int, tuple[int, str, list[int]]], root: int) -> float:
    """Seconds of CPU of the live descendants of ``root`` (and of their ended children)."""
    total = 0
    for parent, _, times in processes.values():
        up = parent
        while up and up != root:
            up = processes.get(up, (0, "", []))[0]
        if up == root:
            total += sum(times)
    return total / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """Samples the CPU of this process, of its descendants and of the local PostgreSQL every
    0.25 s, so the CPU spent while the orders were in flight can be told apart from the
    layout's start-up and shutdown (about 5 s of CPU for its processes). A sample reads every
    process's ``/proc/<pid>/stat`` once (a few ms of CPU, counted with the clients)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float, float | None]] = []

    def read(self) -> None:
        own = resource.getrusage(resource.RUSAGE_SELF)
        processes = _processes()
        tree, pg = _tree_cpu(processes, os.getpid()), postgres_cpu(processes)
        self.samples.append((time.time(), own.ru_utime + own.ru_stime, tree, pg))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.read()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)

    def between(self, start: float, end: float) -> tuple[float, float, float | None]:
        """CPU of (this process, its descendants, PostgreSQL) from ``start`` to ``end``."""
        first = max((s for s in self.samples if s[0] <= start), default=self.samples[0])
        last = min((s for s in self.samples if s[0] >= end), default=self.samples[-1])
        pg = None if first[3] is None or last[3] is None else last[3] - first[3]
        return last[1] - first[1], last[2] - first[2], pg


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
    window = CpuWindow()
    stop = asyncio.Event()
    sampling = asyncio.create_task(window.run(stop))
    try:
        report = await run_drill(options, _quiet_console())
    finally:
        stop.set()
        await sampling
    round_ = report["rounds"][0] if report.get("rounds") else report
    ttc = round_["time_to_consistency"]["values"]
    # achieved: orders made final over the time from the first order to the final sample
    figures = figures_of(ttc, orders, max(spread, round_["final"]["t"]))
    # the CPU while orders were in flight: from the first order's creation to the last one made
    # final, as the database recorded them; this process is the drill's clients (and its
    # sampler), the layout runs in its children
    start, end = await _orders_window(url)
    own, children, pg = window.between(start, end)
    per = 1000 / len(ttc) if ttc else float("nan")
    split = [("clients", own * per), ("serve, workers, relay, provider", children * per)]
    if pg is not None:
        split.append(("PostgreSQL", pg * per))
    cpu_ms = sum(ms for _, ms in split)
    return {**figures, "cpu_ms": cpu_ms, "cpu_split": split, "cores_at_rate": rate * cpu_ms / 1000}


async def _orders_window(url: str) -> tuple[float, float]:
    """When the first order was created and the last order made final (seconds since the
    epoch)."""
    from convergent_shop.orders import orders as shop_orders

    store = Store(url)
    try:
        async with store.begin() as conn:
            first, last = (
                await conn.execute(
                    sa.select(
                        sa.func.min(shop_orders.c.created_at), sa.func.max(shop_orders.c.updated_at)
                    )
                )
            ).one()
    finally:
        await store.close()
    return first.timestamp(), last.timestamp()


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
                if "cores_at_rate" in saga:
                    print(
                        f"  while orders were in flight: {saga['cpu_ms']:.1f} ms of CPU per order;"
                        f" {rate:.0f} orders/s take {saga['cores_at_rate']:.1f} cores at that "
                        f"cost; this machine has {os.cpu_count()}"
                    )


if __name__ == "__main__":
    eventloop.tune_gc()  # as the CLI's processes do
    eventloop.run(main())
