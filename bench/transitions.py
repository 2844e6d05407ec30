"""Transitions per second against a plain single UPDATE, on SQLite and PostgreSQL.

Each operation is one committed transaction. The baseline runs
``UPDATE t SET state = ?, version = version + 1 WHERE id = ?``; the measured side runs
``ResourceTable.transition`` (conditional UPDATE ... RETURNING, a history row and a wake-up);
"by hand" is the same conditional UPDATE and history INSERT written directly, so the second
ratio is the cost of the engine itself and the first the cost of keeping a history at all.
Many short rounds alternate so all sides see the same machine load; the median round counts.

    python bench/transitions.py [--quick] [--database sqlite|postgres|both]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from convergent.resources import Action, ResourceTable, StateMachine, record_history
from convergent.store import Store

PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
meta = sa.MetaData()
items = sa.Table(
    "bench_items",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)
MACHINE = StateMachine(
    "item", initial="a", actions=[Action("flip", "a", "b"), Action("flop", "b", "a")]
)
ROWS = 64


async def plain_round(store: Store, ops: int) -> float:
    states = {i: "a" for i in range(ROWS)}
    started = time.perf_counter()
    for n in range(ops):
        key = n % ROWS
        target = "b" if states[key] == "a" else "a"
        async with store.begin() as conn:
            await conn.execute(
                sa.update(items)
                .where(items.c.id == key)
                .values(state=target, version=items.c.version + 1)
            )
        states[key] = target
    return ops / (time.perf_counter() - started)


async def by_hand_round(store: Store, ops: int) -> float:
    """What the engine does, written by hand: conditional UPDATE ... RETURNING + history."""
    states = {i: "a" for i in range(ROWS)}
    started = time.perf_counter()
    for n in range(ops):
        key = n % ROWS
        source = states[key]
        target = "b" if source == "a" else "a"
        async with store.begin() as conn:
            row = (
                await conn.execute(
                    sa.update(items)
                    .where(items.c.id == key, items.c.state == source)
                    .values(state=target, version=items.c.version + 1)
                    .returning(items.c.version)
                )
            ).one()
            await record_history(
                conn,
                resource_type="item",
                resource_id=str(key),
                action="move",
                from_state=source,
                to_state=target,
                version=row.version,
                at=store.clock.now(),
            )
        states[key] = target
    return ops / (time.perf_counter() - started)


async def transition_round(store: Store, ops: int) -> float:
    resource = ResourceTable(items, MACHINE, updated_at_column=None)
    states = {i: "a" for i in range(ROWS)}
    started = time.perf_counter()
    for n in range(ops):
        key = n % ROWS
        action = "flip" if states[key] == "a" else "flop"
        async with store.begin() as conn:
            row = await resource.transition(conn, key, action)
        states[key] = row.state
    return ops / (time.perf_counter() - started)


async def reset(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(meta.drop_all)
        await conn.run_sync(meta.create_all)
        await conn.execute(
            items.insert(), [{"id": i, "state": "a", "version": 1} for i in range(ROWS)]
        )


async def measure(url: str, ops: int, rounds: int) -> dict[str, float]:
    store = Store(url)
    try:
        await store.migrate()
        rates: dict[str, list[float]] = {"plain": [], "by_hand": [], "transition": []}
        sides: list[tuple[str, Callable[[Store, int], Awaitable[float]]]] = [
            ("plain", plain_round),
            ("by_hand", by_hand_round),
            ("transition", transition_round),
        ]
        for _ in range(rounds):
            for name, run in sides:
                await reset(store)
                rates[name].append(await run(store, ops))
        return {name: statistics.median(values) for name, values in rates.items()}
    finally:
        await store.close()


async def pg_database() -> str | None:
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"convergent_bench_{secrets.token_hex(4)}"
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no PostgreSQL here: report and measure SQLite only
        print(f"postgresql: skipped ({exc.__class__.__name__})")
        return None
    finally:
        await engine.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def drop_pg(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


def report(database: str, rates: dict[str, float]) -> None:
    plain, by_hand, moved = rates["plain"], rates["by_hand"], rates["transition"]
    print(
        f"{database:<12}{plain:>16.0f}{by_hand:>11.0f}{moved:>14.0f}"
        f"{moved / plain:>7.2f}{moved / by_hand:>12.2f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds instead of a minute")
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    ops, rounds = (100, 3) if args.quick else (250, 8)
    print(f"{ops} transactions per round, median of {rounds} rounds per side, one writer")
    print(
        f"{'database':<12}{'plain UPDATE/s':>16}{'by hand/s':>11}{'transition/s':>14}"
        f"{'ratio':>7}{'vs by hand':>12}"
    )
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
            report("sqlite", await measure(url, ops, rounds))
    if args.database in ("postgres", "both") and (url := await pg_database()):
        try:
            report("postgresql", await measure(url, ops, rounds))
        finally:
            await drop_pg(url)


if __name__ == "__main__":
    asyncio.run(main())
