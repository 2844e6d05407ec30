"""Durable 3-step workflows: convergent against DBOS on the same PostgreSQL, in the same run.

Each engine runs in its own subprocess on a fresh database: N workflows, C concurrent callers,
each caller starts a workflow and waits for its result. Prints workflows/s, p50 and p99 latency
for both and the ratio; also convergent on SQLite.

    python bench/workflows.py [--quick] [--n 5000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PG_ADMIN = os.environ.get("CONVERGENT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(db: str, driver: str = "postgresql+asyncpg") -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"{driver}://{base}/{db}"


async def _admin(*statements: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(_pg_url("postgres"), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))
    await engine.dispose()


def _summary(latencies: list[float], elapsed: float, cpu: float) -> dict[str, float]:
    qs = statistics.quantiles(latencies, n=100)
    n = len(latencies)
    # the bench process's CPU per workflow (callers, engine, driver): on a machine whose cores
    # are shared, a steadier figure than the rate
    return {"rate": n / elapsed, "p50": qs[49], "p99": qs[98], "n": n, "cpu_ms": cpu / n * 1000}


async def _drive(n: int, concurrency: int, one: Any) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - t0)

    begin, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return _summary(latencies, time.perf_counter() - begin, time.process_time() - cpu)


# -- convergent ------------------------------------------------------------------------------


async def run_convergent(url: str, n: int, concurrency: int) -> dict[str, float]:
    from convergent.store import Store
    from convergent.workflows import (
        StepContext,
        Worker,
        WorkflowContext,
        result,
        step,
        submit,
        workflow,
    )

    @step
    async def one(ctx: StepContext, x: int) -> int:
        return x + 1

    @step
    async def two(ctx: StepContext, x: int) -> int:
        return x * 2

    @step
    async def three(ctx: StepContext, x: int) -> int:
        return x - 1

    @workflow(name="bench.three_steps")
    async def three_steps(ctx: WorkflowContext, x: int) -> int:
        return await three(await two(await one(x)))

    store = Store(url, pool_size=20, max_overflow=40)
    await store.migrate()
    stop = asyncio.Event()
    worker = Worker(store, concurrency=concurrency * 2, poll_interval=0.5)
    task = asyncio.create_task(worker.run(stop))

    async def call(i: int) -> None:
        run_id = await submit(store, three_steps, i, key=f"bench-{i}")
        assert await result(store, run_id, wait=60) == (i + 1) * 2 - 1

    await _drive(min(200, n), concurrency, call)  # warm up (keys differ below)

    async def measured(i: int) -> None:
        await call(n + i)

    summary = await _drive(n, concurrency, measured)
    summary["batches"] = worker.committer.batches
    summary["writes"] = worker.committer.writes
    stop.set()
    await task
    await store.close()
    return summary


# -- DBOS ------------------------------------------------------------------------------------


async def run_dbos(url: str, n: int, concurrency: int) -> dict[str, float]:
    from dbos import DBOS

    @DBOS.step()
    async def one(x: int) -> int:
        return x + 1

    @DBOS.step()
    async def two(x: int) -> int:
        return x * 2

    @DBOS.step()
    async def three(x: int) -> int:
        return x - 1

    @DBOS.workflow()
    async def three_steps(x: int) -> int:
        return await three(await two(await one(x)))

    DBOS(config={"name": "convergent-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()

    async def call(i: int) -> None:
        assert await three_steps(i) == (i + 1) * 2 - 1

    await _drive(min(200, n), concurrency, call)
    summary = await _drive(n, concurrency, call)
    DBOS.destroy()
    return summary


# -- orchestration ---------------------------------------------------------------------------


def _child(engine: str, url: str, n: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            engine,
            "--url",
            url,
            "--n",
            str(n),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{out.stderr[-3000:]}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _show(label: str, s: dict[str, float]) -> None:
    print(
        f"{label:<22} {s['rate']:8.0f} workflows/s   p50 {s['p50'] * 1000:7.1f} ms   "
        f"p99 {s['p99'] * 1000:7.1f} ms   CPU {s['cpu_ms']:.2f} ms/workflow   (n={int(s['n'])})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1000")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--child", choices=["convergent", "dbos"])
    parser.add_argument("--url")
    args = parser.parse_args()
    from convergent import eventloop  # uvloop where installed, for both engines alike

    if args.child:
        eventloop.tune_gc()  # as the CLI's processes do
        runner = run_convergent if args.child == "convergent" else run_dbos
        print(json.dumps(eventloop.run(runner(args.url, args.n, args.concurrency))))
        return
    n = 1000 if args.quick else args.n
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    suffix = f"{os.getpid()}_{secrets.token_hex(3)}"
    ours, theirs = f"bench_convergent_{suffix}", f"bench_dbos_{suffix}"
    asyncio.run(_admin(f'CREATE DATABASE "{ours}"', f'CREATE DATABASE "{theirs}"'))
    try:
        print(
            f"3-step workflows, N={n}, {args.concurrency} concurrent callers, "
            f"{eventloop.loop_name()} event loop",
            flush=True,
        )
        with tempfile.TemporaryDirectory() as tmp:
            lite = _child("convergent", f"sqlite+aiosqlite:///{tmp}/bench.db", n, args.concurrency)
        _show("sqlite: convergent", lite)
        conv = _child("convergent", _pg_url(ours), n, args.concurrency)
        _show("postgres: convergent", conv)
        dbos = _child("dbos", _pg_url(theirs, "postgresql"), n, args.concurrency)
        _show("postgres: DBOS", dbos)
        ratio = conv["rate"] / dbos["rate"]
        print(f"p99 convergent {conv['p99'] * 1000:.1f} ms vs DBOS p50 {dbos['p50'] * 1000:.1f} ms")
        print(
            f"postgres: convergent {conv['rate']:.0f} workflows/s, "
            f"DBOS {dbos['rate']:.0f} workflows/s, ratio {ratio:.1f}; "
            f"CPU per workflow {conv['cpu_ms']:.2f} vs {dbos['cpu_ms']:.2f} ms"
        )
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    finally:
        drop = [
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname IN ('{ours}', '{theirs}')",
            f'DROP DATABASE IF EXISTS "{ours}"',
            f'DROP DATABASE IF EXISTS "{theirs}"',
        ]
        asyncio.run(_admin(*drop))


if __name__ == "__main__":
    main()
