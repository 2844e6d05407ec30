"""Invariants the whole system must hold once it has settled, each a named async check.

A check reads the shop's database (and the payment provider's ledger) and answers pass, fail
or skipped: skipped when the tables it needs do not exist yet, so the drill runs as parts land.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store import Store

__all__ = [
    "BOOKING_TERMINAL",
    "CHECKS",
    "ORDER_TERMINAL",
    "Check",
    "CheckContext",
    "CheckResult",
    "run_checks",
    "table_columns",
]

log = logging.getLogger(__name__)

ORDER_TERMINAL = frozenset({"completed", "cancelled", "failed"})
# a booking's confirmation is settled once it is ready (confirmed), failed or cancelled; archiving
# happens later, on its own timer
BOOKING_TERMINAL = frozenset({"ready", "archived", "cancelled", "failed"})

Status = Literal["pass", "fail", "skipped"]


@dataclass
class CheckContext:
    store: Store
    psp_ledger: dict[str, Any] | None = None
    #: idempotency key -> order ids the clients were answered with (from the workload)
    orders_by_key: dict[str, set[str]] | None = None
    #: HTTP status -> how many answers the clients got with it (from the workload)
    statuses: Mapping[int, int] | None = None


@dataclass
class CheckResult:
    name: str
    status: Status
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "data": self.data}


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    run: Callable[[CheckContext], Awaitable[CheckResult]]


CHECKS: list[Check] = []


def check(name: str, description: str) -> Callable[..., Any]:
    def register(fn: Callable[[CheckContext], Awaitable[CheckResult]]) -> Any:
        CHECKS.append(Check(name, description, fn))
        return fn

    return register


async def table_columns(conn: AsyncConnection, name: str) -> set[str] | None:
    """The column names of table ``name``, or None if it does not exist."""

    def inspect(sync_conn: sa.Connection) -> set[str] | None:
        inspector = sa.inspect(sync_conn)
        if not inspector.has_table(name):
            return None
        return {c["name"] for c in inspector.get_columns(name)}

    return await conn.run_sync(inspect)


def _skip(name: str, why: str) -> CheckResult:
    return CheckResult(name, "skipped", f"not available: {why}")


async def _states(conn: AsyncConnection, table: str, column: str) -> dict[str, int]:
    rows = await conn.execute(
        sa.text(f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column}")  # names are ours
    )
    return {str(state): int(n) for state, n in rows}


async def _all_terminal(
    ctx: CheckContext, name: str, table: str, terminal: frozenset[str], what: str
) -> CheckResult:
    async with ctx.store.read() as conn:
        columns = await table_columns(conn, table)
        if columns is None:
            return _skip(name, f"no {table} table")
        column = "state" if "state" in columns else "status"
        states = await _states(conn, table, column)
    stuck = {s: n for s, n in states.items() if s not in terminal}
    if not stuck:
        return CheckResult(name, "pass", f"all {sum(states.values())} {what} are final", states)
    detail = f"{sum(stuck.values())} {what} not final: {stuck}"
    return CheckResult(name, "fail", detail, states)


@check("orders_terminal", "every order reached a final state")
async def orders_terminal(ctx: CheckContext) -> CheckResult:
    return await _all_terminal(ctx, "orders_terminal", "shop_orders", ORDER_TERMINAL, "orders")


@check("one_order_per_key", "every Idempotency-Key created exactly one order")
async def one_order_per_key(ctx: CheckContext) -> CheckResult:
    name = "one_order_per_key"
    if not ctx.orders_by_key:
        return _skip(name, "no workload answers to compare")
    several = {k: sorted(ids) for k, ids in ctx.orders_by_key.items() if len(ids) > 1}
    if several:
        detail = f"{len(several)} keys created more than one order (retries or double submits)"
        return CheckResult(name, "fail", detail, {"keys": dict(list(several.items())[:50])})
    return CheckResult(name, "pass", f"{len(ctx.orders_by_key)} keys, one order each")


@check(
    "no_internal_errors", "no request was answered 500 (an outage is a 503, a conflict a 409/412)"
)
async def no_internal_errors(ctx: CheckContext) -> CheckResult:
    name = "no_internal_errors"
    if ctx.statuses is None:
        return _skip(name, "no workload answers to count")
    answered = sum(ctx.statuses.values())
    errors = ctx.statuses.get(500, 0)
    if errors:
        detail = f"{errors} of {answered} answers were 500: the traceback is in the shop's log"
        return CheckResult(name, "fail", detail, {"internal_errors": errors})
    return CheckResult(name, "pass", f"{answered} answers, none 500")


@check("bookings_terminal", "every booking reached a final state")
async def bookings_terminal(ctx: CheckContext) -> CheckResult:
    name = "bookings_terminal"
    return await _all_terminal(ctx, name, "shop_bookings", BOOKING_TERMINAL, "bookings")


@check("charges_match_payments", "provider charges equal captured payments (none lost, none extra)")
async def charges_match_payments(ctx: CheckContext) -> CheckResult:
    name = "charges_match_payments"
    if ctx.psp_ledger is None:
        return _skip(name, "no payment provider ledger")
    async with ctx.store.read() as conn:
        if await table_columns(conn, "shop_payments") is None:
            return _skip(name, "no shop_payments table")
        rows = await conn.execute(
            sa.text("SELECT order_id FROM shop_payments WHERE status = 'captured'")
        )
        shop = {str(r[0]) for r in rows}
    charged = set(ctx.psp_ledger.get("captured_per_reference", {}))
    extra, lost = sorted(charged - shop), sorted(shop - charged)
    data = {"charged": len(charged), "captured_in_shop": len(shop), "extra": extra, "lost": lost}
    if extra or lost:
        return CheckResult(name, "fail", f"{len(extra)} unexplained, {len(lost)} lost", data)
    return CheckResult(name, "pass", f"{len(shop)} captured payments, each charged", data)


@check("no_double_charge", "no order and no idempotency key charged twice at the provider")
async def no_double_charge(ctx: CheckContext) -> CheckResult:
    name = "no_double_charge"
    if ctx.psp_ledger is None:
        return _skip(name, "no payment provider ledger")
    doubles = list(ctx.psp_ledger.get("double_charges", []))
    reused = sorted(k for k, n in ctx.psp_ledger.get("per_key", {}).items() if n > 1)
    data = {"double_charged_orders": doubles, "keys_used_twice": reused}
    if doubles or reused:
        return CheckResult(name, "fail", f"{len(doubles)} orders charged twice", data)
    captured = ctx.psp_ledger.get("captured", {}).get("count", 0)
    return CheckResult(name, "pass", f"{captured} charges, none twice", data)


@check("inventory_conserved", "available + reserved + shipped equals initial stock per SKU")
async def inventory_conserved(ctx: CheckContext) -> CheckResult:
    name = "inventory_conserved"
    async with ctx.store.read() as conn:
        if await table_columns(conn, "shop_stock") is None:
            return _skip(name, "no shop_stock table")
        from convergent_shop.inventory import conservation_violations

        broken = await conservation_violations(conn)
    if broken:
        return CheckResult(name, "fail", f"{len(broken)} SKUs do not add up", {"skus": broken})
    return CheckResult(name, "pass", "every SKU adds up")


@check("no_stuck_idempotency_keys", "no idempotency key in progress past its lock")
async def no_stuck_idempotency_keys(ctx: CheckContext) -> CheckResult:
    name = "no_stuck_idempotency_keys"
    now = ctx.store.clock.now()
    async with ctx.store.read() as conn:
        if await table_columns(conn, "convergent_idempotency_keys") is None:
            return _skip(name, "no idempotency table")
        table = ctx.store.tables.idempotency_keys
        stuck = (
            await conn.execute(
                sa.select(table.c.scope, table.c.key).where(
                    table.c.status == "in_progress", table.c.locked_until < now
                )
            )
        ).all()
    keys = [f"{scope}/{key}" for scope, key in stuck]
    if keys:
        return CheckResult(name, "fail", f"{len(keys)} keys stuck in progress", {"keys": keys})
    return CheckResult(name, "pass", "no key stuck")


@check("dead_letters_empty", "nothing was given up on (or every dead letter is explained)")
async def dead_letters_empty(ctx: CheckContext) -> CheckResult:
    name = "dead_letters_empty"
    async with ctx.store.read() as conn:
        if await table_columns(conn, "convergent_dead_letters") is None:
            return _skip(name, "no dead letter table")
        table = ctx.store.tables.dead_letters
        rows = (
            await conn.execute(
                sa.select(table.c.source, table.c.name, table.c.reason).where(
                    table.c.status == "dead"
                )
            )
        ).all()
    if rows:
        data = {"dead": [{"source": s, "name": n, "reason": r} for s, n, r in rows[:50]]}
        return CheckResult(name, "fail", f"{len(rows)} dead letters", data)
    return CheckResult(name, "pass", "no dead letters")


@check("fills_applied_once", "every exchange fill applied exactly once to orders and positions")
async def fills_applied_once(ctx: CheckContext) -> CheckResult:
    name = "fills_applied_once"
    async with ctx.store.read() as conn:
        if await table_columns(conn, "shop_fills") is None:
            return _skip(name, "no shop_fills table")
        mismatched = (
            await conn.execute(
                sa.text(
                    "SELECT o.client_order_id FROM shop_trade_orders o LEFT JOIN "
                    "(SELECT client_order_id, SUM(qty) AS q FROM shop_fills "
                    "GROUP BY client_order_id) f ON f.client_order_id = o.client_order_id "
                    "WHERE COALESCE(f.q, 0) != o.filled_qty"
                )
            )
        ).all()
    if mismatched:
        ids = [r[0] for r in mismatched]
        return CheckResult(name, "fail", f"{len(ids)} orders miscounted", {"orders": ids})
    return CheckResult(name, "pass", "fills and positions agree")


@check("trades_filled", "every trade order is completely filled in the shop's books")
async def trades_filled(ctx: CheckContext) -> CheckResult:
    name = "trades_filled"
    async with ctx.store.read() as conn:
        if await table_columns(conn, "shop_trade_orders") is None:
            return _skip(name, "no shop_trade_orders table")
        states = await _states(conn, "shop_trade_orders", "status")
    open_ = {s: n for s, n in states.items() if s != "filled"}
    if open_:
        return CheckResult(name, "fail", f"{sum(open_.values())} trades not filled", states)
    return CheckResult(name, "pass", f"{states.get('filled', 0)} trades filled", states)


async def run_checks(ctx: CheckContext, checks: list[Check] | None = None) -> list[CheckResult]:
    """Run every check; one that raises is a failure naming the error, not a crash."""
    results = []
    for item in CHECKS if checks is None else checks:
        try:
            results.append(await item.run(ctx))
        except Exception as exc:
            log.exception("check %s raised", item.name)
            results.append(CheckResult(item.name, "fail", f"check raised {exc!r}"))
    return results


CALLBACK_PATIENCE = 180.0  # callbacks trail the state by the webhook backlog; wait it out


@check(
    "final_states_called_back",
    "every final order state and every settled booking's latest version was called back",
)
async def final_states_called_back(ctx: CheckContext) -> CheckResult:
    name = "final_states_called_back"
    deadline = asyncio.get_running_loop().time() + CALLBACK_PATIENCE
    while True:
        async with ctx.store.read() as conn:
            if await table_columns(conn, "shop_notifications") is None:
                return _skip(name, "no notifications receiver")
            endpoints = await conn.execute(
                sa.text("SELECT COUNT(*) FROM convergent_webhook_endpoints WHERE enabled")
            )
            if not endpoints.scalar():
                return _skip(name, "no webhook endpoint registered")
            orders, bookings = await _final_orders(conn), await _settled_bookings(conn)
            received = await _received(conn)
        missing = (orders | bookings) - received
        if not missing or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    missing_bookings = bookings - received
    data = {
        "final": len(orders),
        "called_back": len(orders - missing),
        "bookings": len(bookings),
        "bookings_called_back": len(bookings) - len(missing_bookings),
        "missing": sorted(":".join(map(str, m)) for m in missing)[:50],
    }
    if missing:
        detail = (
            f"{len(missing) - len(missing_bookings)} final order states and "
            f"{len(missing_bookings)} booking changes never called back"
        )
        return CheckResult(name, "fail", detail, data)
    detail = f"all {len(orders)} final order states and {len(bookings)} bookings called back"
    return CheckResult(name, "pass", detail, data)


Callback = tuple[str, str, str, int | None]  # (kind, id, state, version or None for orders)


async def _final_orders(conn: AsyncConnection) -> set[Callback]:
    from convergent_shop.orders import orders

    terminal = orders.c.state.in_(sorted(ORDER_TERMINAL))
    rows = await conn.execute(sa.select(orders.c.id, orders.c.state).where(terminal))
    return {("order", str(order_id), str(state), None) for order_id, state in rows}


async def _settled_bookings(conn: AsyncConnection) -> set[Callback]:
    """Each settled booking at its latest version: a PATCH or cancel must be called back too."""
    if await table_columns(conn, "shop_bookings") is None:
        return set()
    from convergent_shop.bookings import bookings

    c = bookings.c
    rows = await conn.execute(
        sa.select(c.code, c.state, c.version).where(c.state.in_(sorted(BOOKING_TERMINAL)))
    )
    return {("booking", str(code), str(state), int(version)) for code, state, version in rows}


async def _received(conn: AsyncConnection) -> set[Callback]:
    from convergent_shop.notifications import notifications

    sent = await conn.execute(sa.select(notifications.c.event_type, notifications.c.data))
    return {_called_back(str(event), data) for event, data in sent}


def _called_back(event: str, data: Any) -> Callback:
    """What a received callback speaks of; an order's is matched without its version."""
    kind, _, state = event.partition(".")
    data = data if isinstance(data, dict) else {}
    version = data.get("version") if kind == "booking" else None
    return kind, str(data.get("id")), state, version if isinstance(version, int) else None
