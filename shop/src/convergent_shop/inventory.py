"""Inventory: stock per SKU, reserved per order, each step idempotent.

Conservation holds at every commit: ``available + reserved + shipped == initial`` per SKU.
One reservation per order: a ``release`` that arrives before its ``reserve`` (a compensation
overtaking a late step) leaves a released tombstone, so the late reserve takes nothing.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import IdempotencyKeyMismatch, InvalidTransition
from convergent.store import direct
from convergent.store.types import JSONType, UTCDateTime
from convergent_shop.db import metadata
from convergent_shop.keyed import insert_once

__all__ = [
    "conservation_violations",
    "release",
    "reservations",
    "reserve",
    "ship",
    "stock",
    "stock_up",
]

stock = sa.Table(
    "shop_stock",
    metadata,
    sa.Column("sku", sa.String(64), primary_key=True),
    sa.Column("initial", sa.BigInteger(), nullable=False),
    sa.Column("available", sa.BigInteger(), nullable=False),
    sa.Column("reserved", sa.BigInteger(), nullable=False),
    sa.Column("shipped", sa.BigInteger(), nullable=False),
)

reservations = sa.Table(
    "shop_reservations",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("items", JSONType, nullable=False),
    # reserved | rejected | released | shipped
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(255), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


def _view(row: Any) -> dict[str, Any]:
    return {
        "order_id": row.order_id,
        "status": row.status,
        "items": row.items,
        "reason": row.reason,
    }


# the hot statements, built once and executed with parameters (building one costs more than
# SQLite running it)
_RESERVATION = reservations.select().where(reservations.c.order_id == sa.bindparam("b_order"))
_TAKE = (
    stock.update()
    .where(stock.c.sku == sa.bindparam("b_sku"), stock.c.available >= sa.bindparam("b_qty"))
    .values(
        available=stock.c.available - sa.bindparam("b_qty"),
        reserved=stock.c.reserved + sa.bindparam("b_qty"),
    )
)
_SETTLE_RESERVATION = (
    reservations.update()
    .where(reservations.c.order_id == sa.bindparam("b_order"))
    .values(
        status=sa.bindparam("v_status"),
        reason=sa.bindparam("v_reason"),
        updated_at=sa.bindparam("v_now", type_=reservations.c.updated_at.type),
    )
)
# a reserved reservation moves on (released or shipped) once
_MOVE_RESERVED = (
    reservations.update()
    .where(reservations.c.order_id == sa.bindparam("b_order"), reservations.c.status == "reserved")
    .values(
        status=sa.bindparam("v_status"),
        updated_at=sa.bindparam("v_now", type_=reservations.c.updated_at.type),
    )
)


async def _reservation(conn: AsyncConnection, order_id: str) -> Any:
    row = (await direct.execute(conn, _RESERVATION, {"b_order": order_id})).one_or_none()
    if row is None:
        raise InvalidTransition(f"order {order_id} has no reservation")
    return row


async def reservation_made_with(
    conn: AsyncConnection, order_id: str, key: str
) -> dict[str, Any] | None:
    """The reservation ``key`` made for the order, if it holds stock now; else None."""
    query = reservations.select().where(
        reservations.c.order_id == order_id,
        reservations.c.key == key,
        reservations.c.status == "reserved",
    )
    row = (await conn.execute(query)).one_or_none()
    return None if row is None else _view(row)


async def stock_up(conn: AsyncConnection, sku: str, qty: int) -> None:
    """Add ``qty`` units of ``sku`` to the initial and available stock."""
    await insert_once(
        conn, stock, {"sku": sku, "initial": 0, "available": 0, "reserved": 0, "shipped": 0}
    )
    await conn.execute(
        stock.update()
        .where(stock.c.sku == sku)
        .values(initial=stock.c.initial + qty, available=stock.c.available + qty)
    )


def _totals(items: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for item in items:
        totals[item["sku"]] = totals.get(item["sku"], 0) + int(item["qty"])
    return dict(sorted(totals.items()))  # a fixed lock order: no deadlocks between orders


async def reserve(
    conn: AsyncConnection, order_id: str, items: list[dict[str, Any]], key: str, now: datetime
) -> dict[str, Any]:
    """Reserve ``items`` for ``order_id``: status ``reserved``, or ``rejected`` when short.

    The outcome is recorded, so calling again answers the same outcome and moves nothing.
    """
    claimed = await insert_once(
        conn,
        reservations,
        {"order_id": order_id, "key": key, "items": items, "status": "claimed", "updated_at": now},
    )
    row = await _reservation(conn, order_id)
    if not claimed:
        if row.key != key and row.status != "released":
            raise IdempotencyKeyMismatch(f"order {order_id} was reserved with another key")
        return _view(row)
    taken: list[tuple[str, int]] = []
    shortage = None
    for sku, qty in _totals(items).items():
        result = await direct.execute(conn, _TAKE, {"b_sku": sku, "b_qty": qty})
        if result.rowcount != 1:
            shortage = sku
            break
        taken.append((sku, qty))
    for sku, qty in taken if shortage else ():
        await _move(conn, sku, qty, "reserved", "available")
    status = "rejected" if shortage else "reserved"
    reason = f"not enough {shortage} in stock" if shortage else None
    await direct.execute(
        conn,
        _SETTLE_RESERVATION,
        {"b_order": order_id, "v_status": status, "v_reason": reason, "v_now": now},
    )
    return _view(await _reservation(conn, order_id))


async def _move(conn: AsyncConnection, sku: str, qty: int, source: str, target: str) -> None:
    await direct.execute(conn, _stock_move(source, target), {"b_sku": sku, "b_qty": qty})


@functools.cache
def _stock_move(source: str, target: str) -> sa.Update:
    """Move ``b_qty`` units of ``b_sku`` from one count to another; built once per pair."""
    qty: sa.BindParameter[int] = sa.bindparam("b_qty")
    return (
        stock.update()
        .where(stock.c.sku == sa.bindparam("b_sku"))
        .values({source: stock.c[source] - qty, target: stock.c[target] + qty})
    )


async def release(conn: AsyncConnection, order_id: str, key: str, now: datetime) -> dict[str, Any]:
    """Give back what ``order_id`` reserved (the compensation of ``reserve``); idempotent."""
    tombstone = {"order_id": order_id, "key": key, "items": [], "status": "released"}
    if await insert_once(conn, reservations, {**tombstone, "updated_at": now}):
        return _view(await _reservation(conn, order_id))  # nothing was reserved; none will be
    moved = await conn.execute(
        _MOVE_RESERVED, {"b_order": order_id, "v_status": "released", "v_now": now}
    )
    row = await _reservation(conn, order_id)
    if moved.rowcount == 1:
        for sku, qty in _totals(row.items).items():
            await _move(conn, sku, qty, "reserved", "available")
    return _view(row)


async def ship(conn: AsyncConnection, order_id: str, key: str, now: datetime) -> dict[str, Any]:
    """Turn the order's reservation into shipped stock; idempotent by state."""
    moved = await conn.execute(
        _MOVE_RESERVED, {"b_order": order_id, "v_status": "shipped", "v_now": now}
    )
    row = await _reservation(conn, order_id)
    if moved.rowcount == 1:
        for sku, qty in _totals(row.items).items():
            await _move(conn, sku, qty, "reserved", "shipped")
    return _view(row)


async def conservation_violations(conn: AsyncConnection) -> list[dict[str, Any]]:
    """SKUs whose counts do not add up: ``available + reserved + shipped != initial``."""
    rows = await conn.execute(
        stock.select().where(
            stock.c.available + stock.c.reserved + stock.c.shipped != stock.c.initial
        )
    )
    return [dict(r._mapping) for r in rows]
