"""Figures read from the database while the system runs (every query tolerates a missing table)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import StoreUnavailable
from convergent.store import Store
from convergent_shop.sim.checks import ORDER_TERMINAL, table_columns

__all__ = ["Sampler", "read_figures", "runs_to_look_at", "time_to_consistency", "time_to_fill"]


async def _scalar(conn: AsyncConnection, sql: str) -> int | None:
    try:
        async with conn.begin_nested():
            return int((await conn.execute(sa.text(sql))).scalar_one() or 0)
    except sa.exc.DBAPIError:
        return None


async def _columns(
    conn: AsyncConnection, table: str, seen: dict[str, set[str]] | None
) -> set[str] | None:
    """`table_columns`, remembered in ``seen`` once the table exists (a sampler asks twice a
    second; its tables' columns do not change while it runs)."""
    if seen is not None and table in seen:
        return seen[table]
    columns = await table_columns(conn, table)
    if seen is not None and columns is not None:
        seen[table] = columns
    return columns


async def _count(
    conn: AsyncConnection,
    table: str,
    where: dict[str, str],
    seen: dict[str, set[str]] | None = None,
) -> int | None:
    """Rows of ``table`` matching the first WHERE whose column exists; None without the table."""
    columns = await _columns(conn, table, seen)
    if columns is None:
        return None
    for column, condition in where.items():
        if column in columns:
            return await _scalar(conn, f"SELECT COUNT(*) FROM {table} WHERE {condition}")
    return await _scalar(conn, f"SELECT COUNT(*) FROM {table}")


async def read_figures(store: Store, seen: dict[str, set[str]] | None = None) -> dict[str, Any]:
    """Orders by state, runs in flight, outbox backlog, dead letters, keys in progress
    (``seen``: the columns of the tables found so far, kept by a caller that samples often)."""
    figures: dict[str, Any] = {}
    async with store.read() as conn:
        if await _columns(conn, "shop_orders", seen) is not None:
            by_state_sql = "SELECT state, COUNT(*) FROM shop_orders GROUP BY state"
            rows = await conn.execute(sa.text(by_state_sql))
            by_state = {str(s): int(n) for s, n in rows}
            figures["orders"] = by_state
            figures["converged"] = sum(n for s, n in by_state.items() if s in ORDER_TERMINAL)
            figures["orders_in_flight"] = sum(by_state.values()) - figures["converged"]
        figures["runs_in_flight"] = await _count(
            conn,
            "convergent_runs",
            {"status": "status IN ('pending', 'running', 'compensating', 'sleeping')"},
            seen,
        )
        figures["outbox_backlog"] = await _count(
            conn,
            "convergent_outbox",
            {"published_at": "published_at IS NULL", "status": "status = 'pending'"},
            seen,
        )
        figures["dead_letters"] = await _count(
            conn, "convergent_dead_letters", {"status": "status = 'dead'"}, seen
        )
        figures["trades_open"] = await _count(
            conn, "shop_trade_orders", {"status": "status != 'filled'"}, seen
        )
        figures["keys_in_progress"] = await _count(
            conn, "convergent_idempotency_keys", {"status": "status = 'in_progress'"}, seen
        )
    return figures


async def time_to_consistency(store: Store) -> list[float]:
    """Seconds from acceptance to the final state, for every order that got there."""
    async with store.read() as conn:
        if await table_columns(conn, "shop_orders") is None:
            return []
        from convergent_shop.orders import orders

        rows = await conn.execute(
            sa.select(orders.c.created_at, orders.c.updated_at).where(
                orders.c.state.in_(sorted(ORDER_TERMINAL))
            )
        )
        return sorted(max(0.0, (done - start).total_seconds()) for start, done in rows)


async def runs_to_look_at(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    """The orders an operator opens first: every one not final yet, then the slowest final ones;
    each with its saga's run id, which the report links to the console's run page."""
    async with store.read() as conn:
        if await table_columns(conn, "shop_orders") is None:
            return []
        from convergent.store.schema import runs
        from convergent_shop.orders import orders

        rows = (
            await conn.execute(
                sa.select(orders.c.id, orders.c.state, orders.c.created_at, orders.c.updated_at)
            )
        ).all()
        run_ids = dict(
            (
                await conn.execute(
                    sa.select(runs.c.key, runs.c.id).where(runs.c.workflow == "shop.order")
                )
            ).all()
        )
    entries = [
        {
            "order": str(order_id),
            "state": state,
            "seconds": round(max(0.0, (done - start).total_seconds()), 3),
            "run": str(run_ids[str(order_id)]) if str(order_id) in run_ids else None,
        }
        for order_id, state, start, done in rows
    ]
    stuck = [e for e in entries if e["state"] not in ORDER_TERMINAL]
    final = sorted(
        (e for e in entries if e["state"] in ORDER_TERMINAL), key=lambda e: -e["seconds"]
    )
    return stuck[:limit] + final[:limit]


async def time_to_fill(store: Store) -> list[float]:
    """Seconds from recording a trade order to its last fill, for every filled one."""
    async with store.read() as conn:
        if await table_columns(conn, "shop_trade_orders") is None:
            return []
        from convergent_shop.trading import trade_orders as t

        rows = await conn.execute(
            sa.select(t.c.created_at, t.c.updated_at).where(t.c.status == "filled")
        )
        return sorted(max(0.0, (done - start).total_seconds()) for start, done in rows)


class Sampler:
    """A loop (``run(stop)``) that records the figures every ``interval`` seconds."""

    def __init__(
        self,
        store: Store,
        counters: Callable[[], dict[str, Any]] | None = None,
        interval: float = 0.5,
    ) -> None:
        self.store = store
        self.counters = counters or dict
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self._seen: dict[str, set[str]] = {}

    @property
    def latest(self) -> dict[str, Any]:
        return self.samples[-1] if self.samples else {}

    async def sample(self) -> dict[str, Any]:
        try:
            figures = await read_figures(self.store, self._seen)
            durations = await time_to_consistency(self.store)
            if durations:
                figures["ttc_p50"] = round(durations[len(durations) // 2], 3)
                figures["ttc_p95"] = round(durations[int(len(durations) * 0.95)], 3)
        except Exception as exc:  # the database may be restarting during a drill
            figures = {"error": str(exc)[:200]}
        snapshot = {"t": round(time.monotonic() - self.started, 2), **figures, **self.counters()}
        self.samples.append(snapshot)
        return snapshot

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(StoreUnavailable):  # the drill restarts the database
                await self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
