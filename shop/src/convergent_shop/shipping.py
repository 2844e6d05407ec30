"""Shipping: one shipment per order, created and cancelled idempotently.

A cancel that arrives first leaves a cancelled tombstone, so a late create ships nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import IdempotencyKeyMismatch
from convergent.ids import new_id
from convergent.store import direct
from convergent.store.types import JSONType, UTCDateTime
from convergent_shop.db import metadata
from convergent_shop.keyed import insert_once

__all__ = ["cancel_shipment", "create_shipment", "shipments"]

shipments = sa.Table(
    "shop_shipments",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("tracking", sa.String(64), nullable=False),
    sa.Column("address", JSONType, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # created | cancelled
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


_BY_ORDER = shipments.select().where(shipments.c.order_id == sa.bindparam("b_order"))


async def _shipment(conn: AsyncConnection, order_id: str) -> dict[str, Any]:
    row = (await direct.execute(conn, _BY_ORDER, {"b_order": order_id})).one()
    return {
        "order_id": row.order_id,
        "tracking": row.tracking,
        "status": row.status,
        "address": row.address,
        "key": row.key,
    }


async def create_shipment(
    conn: AsyncConnection,
    order_id: str,
    key: str,
    now: datetime,
    address: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create the order's shipment once; again with the same key returns the same one."""
    created = await insert_once(
        conn,
        shipments,
        {
            "order_id": order_id,
            "key": key,
            "tracking": f"TRK-{new_id()[-12:]}",
            "address": address,
            "status": "created",
            "updated_at": now,
        },
    )
    shipment = await _shipment(conn, order_id)
    if not created and shipment["key"] != key and shipment["status"] != "cancelled":
        raise IdempotencyKeyMismatch(f"order {order_id} was shipped with another key")
    return shipment


async def cancel_shipment(
    conn: AsyncConnection, order_id: str, key: str, now: datetime
) -> dict[str, Any]:
    """Cancel the order's shipment (the compensation of create); idempotent."""
    tombstone = {"order_id": order_id, "key": key, "tracking": "", "status": "cancelled"}
    if not await insert_once(conn, shipments, {**tombstone, "updated_at": now}):
        await conn.execute(
            shipments.update()
            .where(shipments.c.order_id == order_id, shipments.c.status == "created")
            .values(status="cancelled", updated_at=now)
        )
    return await _shipment(conn, order_id)
