"""Fleet queues: the cost of a queue with fleet-wide limits against an unlimited queue, in the
same run on the same PostgreSQL (and SQLite).

Each line: N one-step workflows, C concurrent callers, each submits a run and waits for its result.
The unlimited queue takes runs at submit time in the submitting process (no claim); a second line
submits through another Store, so the same queue claims every run; the fleet queue (limits set
high enough never to bind) claims every run through its limits: the queue row locked, the held
runs counted, a token drawn.

    python bench/queues.py [--quick] [--n 3000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from typing import Any

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
from convergent.workflows.queues import fleet_queue

fleet_queue("bench-fleet", concurrency=100_000, rate_limit=1_000_000, per=1.0)


@step
async def one(ctx: StepContext, x: int) -> int:
    return x + 1


@workflow(name="bench.queues.default")
async def plain(ctx: WorkflowContext, x: int) -> int:
    return await one(x)


@workflow(name="bench.queues.fleet", queue="bench-fleet")
async def limited(ctx: WorkflowContext, x: int) -> int:
    return await one(x)


PG_ADMIN = os.environ.get("CONVERGENT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_url(db: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    return f"postgresql+asyncpg://{base}/{db}"


async def _admin(*statements: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(_pg_url("postgres"), isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        for statement in statements:
            await conn.execute(sa.text(statement))
    await engine.dispose()


async def run(url: str, mode: str, n: int, concurrency: int) -> dict[str, float]:
    """``mode``: "default" (unlimited, fast path), "claimed" (unlimited, submitted through a
    second Store so every run is claimed) or "bench-fleet" (the fleet queue)."""
    queue = "bench-fleet" if mode == "bench-fleet" else "default"
    flow = plain if queue == "default" else limited
    store = Store(url)
    await store.migrate()
    submitter = Store(url) if mode == "claimed" else store  # no worker of its own: no fast path
    stop = asyncio.Event()
    worker = Worker(store, queues={queue: concurrency * 2}, concurrency=concurrency * 2)
    task = asyncio.create_task(worker.run(stop))
    latencies: list[float] = []
    counter = iter(range(n + 200))

    async def caller() -> None:
        for i in counter:
            t0 = time.perf_counter()
            run_id = await submit(submitter, flow, i)
            assert await result(store, run_id, wait=60) == i + 1
            if i >= 200:  # the first 200 warm up
                latencies.append(time.perf_counter() - t0)

    begin = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - begin
    stop.set()
    await task
    if submitter is not store:
        await submitter.close()
    await store.close()
    qs = statistics.quantiles(latencies, n=100)
    return {"rate": (n + 200) / elapsed, "p50": qs[49], "p99": qs[98]}


def _show(label: str, s: dict[str, Any]) -> None:
    print(
        f"{label:<34} {s['rate']:8.0f} workflows/s   p50 {s['p50'] * 1000:7.1f} ms   "
        f"p99 {s['p99'] * 1000:7.1f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N=1000")
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    n = 1000 if args.quick else args.n
    print(f"1-step workflows, N={n}, {args.concurrency} concurrent callers", flush=True)
    for db in ("sqlite", "postgres"):
        rates = {}
        for queue in ("default", "claimed", "bench-fleet"):
            if db == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
                    found = asyncio.run(run(url, queue, n, args.concurrency))
            else:
                name = f"bench_queues_{os.getpid()}_{secrets.token_hex(3)}"
                asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
                try:
                    found = asyncio.run(run(_pg_url(name), queue, n, args.concurrency))
                finally:
                    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            label = {
                "default": "unlimited queue",
                "claimed": "unlimited queue, no fast path",
                "bench-fleet": "fleet queue (limits)",
            }[queue]
            _show(f"{db}: {label}", found)
            rates[queue] = found["rate"]
        print(
            f"{db}: fleet queue at {rates['bench-fleet'] / rates['default']:.2f}x "
            "the unlimited queue's rate, "
            f"{rates['bench-fleet'] / rates['claimed']:.2f}x its rate without the fast path",
            flush=True,
        )


if __name__ == "__main__":
    main()
