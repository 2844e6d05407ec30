"""The console's page queries on PostgreSQL with 1,000,000 runs, against a plain LIMIT 50.

Fills a fresh database through COPY: 1,000,000 runs spread over the last 24 hours (95% completed,
3% failed, 1% cancelled, 1% still active, five workflows, two queues), 20,000 dead letters and
200,000 idempotency keys. Then times, in the same run, each query function a console page calls
(median of many rounds) and the baseline ``SELECT * FROM convergent_runs LIMIT 50``, and prints
the ratio. The same functions answer on SQLite; this measures the big-table case.

    python bench/console.py [--runs 1000000] [--rounds 15]
    python bench/console.py --quick     # 100,000 runs, 5 rounds: a minute on a busy machine
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from convergent.console.queries import dead_letters as letters_q
from convergent.console.queries import idempotency as keys_q
from convergent.console.queries import messages as messages_q
from convergent.console.queries import overview as overview_q
from convergent.console.queries import runs as runs_q
from convergent.console.queries import schedules as schedules_q
from convergent.console.queries import webhooks as webhooks_q
from convergent.store import Store

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
WORKFLOWS = [f"shop.workflow_{i}" for i in range(5)]


def uuid7_at(when: datetime) -> uuid.UUID:
    ms = int(when.timestamp() * 1000)
    value = (ms << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0b10 << 62)
    return uuid.UUID(int=value | random.getrandbits(62))


def run_rows(n: int, now: datetime) -> list[tuple[Any, ...]]:
    rows = []
    span = 24 * 3600
    for i in range(n):
        created = now - timedelta(seconds=span * (n - i) / n)
        roll = random.random()
        status = (
            "completed"
            if roll < 0.95
            else "failed"
            if roll < 0.98
            else "cancelled"
            if roll < 0.99
            else random.choice(["pending", "running"])
        )
        final = status in ("completed", "failed", "cancelled")
        rows.append(
            (
                uuid7_at(created),
                WORKFLOWS[i % len(WORKFLOWS)],
                f"order-{i}",
                "default" if i % 10 else "slow",
                status,
                '{"args": ["x"]}',
                None if status != "completed" else '"ok"',
                "StepFailed: card declined" if status == "failed" else None,
                1,
                None if final else created,
                False,
                created,
                created + timedelta(seconds=random.uniform(0.05, 30)),
            )
        )
    return rows


async def fill(url: str, runs: int) -> None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    now = datetime.now(UTC)
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "convergent_runs",
            records=run_rows(runs, now),
            columns=[
                "id", "workflow", "key", "queue", "status", "args", "result", "error",
                "attempts", "next_at", "cancel_requested", "created_at", "updated_at",
            ],
        )  # fmt: skip
        letters = [
            (uuid7_at(now - timedelta(minutes=i)), random.choice(letters_q.SOURCES), str(i),
             "orders", f"k{i}", "{}", "gave up", 5, "dead" if i % 3 else "retried",
             now - timedelta(minutes=i))
            for i in range(20_000)
        ]  # fmt: skip
        await conn.copy_records_to_table(
            "convergent_dead_letters",
            records=letters,
            columns=[
                "id", "source", "source_ref", "name", "key", "payload", "reason", "attempts",
                "status", "created_at",
            ],
        )  # fmt: skip
        keys = [
            (f"client-{i % 50}", f"req-{i}", "f", "completed" if i % 1000 else "in_progress",
             now - timedelta(seconds=i), now + timedelta(hours=24) - timedelta(seconds=i))
            for i in range(200_000)
        ]  # fmt: skip
        await conn.copy_records_to_table(
            "convergent_idempotency_keys",
            records=keys,
            columns=["scope", "key", "fingerprint", "status", "created_at", "expires_at"],
        )
        await conn.execute("ANALYZE")
        print(f"filled {runs:,} runs in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


async def median_ms(store: Store, query: Callable[[Any], Awaitable[Any]], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        async with store.read() as conn:
            started = time.perf_counter()
            await query(conn)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def idempotency_page(conn: Any) -> None:
    await keys_q.keys_in_flight(conn)
    await keys_q.recent_keys(conn)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="100,000 runs, 5 rounds")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds = 100_000, 5
    name = f"convergent_bench_console_{secrets.token_hex(3)}"
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    store = Store(url)
    try:
        await store.migrate()
        await fill(url, args.runs)
        now = store.clock.now()
        async with store.read() as conn:
            middle = await conn.scalar(
                sa.text("SELECT id FROM convergent_runs ORDER BY id OFFSET :n LIMIT 1"),
                {"n": args.runs // 2},
            )
            page1 = await runs_q.find_runs(conn, runs_q.RunFilter(), now=now)
        f = runs_q.RunFilter
        cases: list[tuple[str, Callable[[Any], Awaitable[Any]]]] = [
            ("baseline: SELECT * FROM convergent_runs LIMIT 50",
             lambda c: c.execute(sa.text("SELECT * FROM convergent_runs LIMIT 50"))),
            ("Overview (all panels, 30 slices)", lambda c: overview_q.overview(c, now=now)),
            ("Runs: newest 50", lambda c: runs_q.find_runs(c, f(), now=now)),
            ("Runs: next page (keyset)",
             lambda c: runs_q.find_runs(c, f(), now=now, cursor=page1.next_cursor)),
            ("Runs: state=failed", lambda c: runs_q.find_runs(c, f(status="failed"), now=now)),
            ("Runs: workflow=X", lambda c: runs_q.find_runs(c, f(workflow=WORKFLOWS[1]), now=now)),
            ("Runs: queue=slow", lambda c: runs_q.find_runs(c, f(queue="slow"), now=now)),
            ("Runs: workflow + queue, no run matches (scans)",
             lambda c: runs_q.find_runs(c, f(workflow=WORKFLOWS[1], queue="slow"), now=now)),
            ("Runs: started in the last 5 min",
             lambda c: runs_q.find_runs(c, f(max_age=timedelta(minutes=5)), now=now)),
            ("Runs: search by key",
             lambda c: runs_q.find_runs(c, f(q=f"order-{args.runs // 3}"), now=now)),
            ("Run detail", lambda c: runs_q.run_detail(c, middle)),
            ("Messages", messages_q.messages),
            ("Dead letters: newest 50 + total",
             lambda c: letters_q.find_letters(c, letters_q.LetterFilter())),
            ("Messages: parked keys", messages_q.parked_keys),
            ("Webhooks", webhooks_q.endpoints_health),
            ("Schedules: fleet queues", schedules_q.fleet_queues),
            ("Idempotency keys: in flight + recent 50", idempotency_page),
        ]  # fmt: skip
        results = [(label, await median_ms(store, q, args.rounds)) for label, q in cases]
        base = results[0][1]
        print(f"\n{args.runs:,} runs on PostgreSQL, median of {args.rounds} rounds")
        print(f"{'query':<52}{'ms':>9}{'× baseline':>12}")
        for label, ms in results:
            print(f"{label:<52}{ms:>9.2f}{ms / base:>12.1f}")
    finally:
        await store.close()
        async with admin.connect() as c:
            await c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
