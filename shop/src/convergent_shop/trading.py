"""Trading: orders sent to the exchange, fills applied exactly once, missed fills recovered.

A fill arrives by callback (maybe twice, maybe never) or by polling the exchange; either way
``record_fill`` stores it under its ``fill_id`` and applies it to the position only when that
insert is new, in the same transaction. So duplicates and recovery never double-count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import PermanentError, StoreUnavailable, TransientError
from convergent.http.problem import Problem
from convergent.store import Store, store_of
from convergent.store.types import UTCDateTime
from convergent_shop.db import metadata
from convergent_shop.keyed import insert_once
from convergent_shop.psp import money, to_cents

__all__ = [
    "FillIn",
    "FillPoller",
    "UnknownTradeOrder",
    "fills",
    "place_order",
    "positions",
    "record_fill",
    "recover_fills",
    "router",
    "trade_orders",
]

log = logging.getLogger(__name__)

trade_orders = sa.Table(
    "shop_trade_orders",
    metadata,
    sa.Column("client_order_id", sa.String(255), primary_key=True),
    sa.Column("symbol", sa.String(16), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("qty", sa.Integer(), nullable=False),
    sa.Column("filled_qty", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # submitted | partial | filled
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

fills = sa.Table(
    "shop_fills",
    metadata,
    sa.Column("fill_id", sa.String(255), primary_key=True),
    sa.Column("client_order_id", sa.String(255), nullable=False, index=True),
    sa.Column("qty", sa.Integer(), nullable=False),
    sa.Column("price_cents", sa.BigInteger(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # callback | poll
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
)

positions = sa.Table(
    "shop_positions",
    metadata,
    sa.Column("symbol", sa.String(16), primary_key=True),
    sa.Column("qty", sa.BigInteger(), nullable=False),  # signed: sells reduce it
    sa.Column("cost_cents", sa.BigInteger(), nullable=False),
)


class UnknownTradeOrder(PermanentError):
    """A fill names a client order id this shop never placed."""


class FillIn(BaseModel):
    client_order_id: str = Field(min_length=1, max_length=255)
    fill_id: str = Field(min_length=1, max_length=255)
    qty: int = Field(gt=0, le=1_000_000_000)  # the columns: a 32-bit qty, 64-bit cents
    price: Decimal = Field(gt=0, le=1_000_000_000, max_digits=18, decimal_places=8)


async def place_order(
    conn: AsyncConnection,
    *,
    client_order_id: str,
    symbol: str,
    side: str,
    qty: int,
    now: datetime,
) -> dict[str, Any]:
    """Record a trade order before it is sent; ``client_order_id`` is its idempotency key."""
    await insert_once(
        conn,
        trade_orders,
        {
            "client_order_id": client_order_id,
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "filled_qty": 0,
            "status": "submitted",
            "created_at": now,
            "updated_at": now,
        },
    )
    query = trade_orders.select().where(trade_orders.c.client_order_id == client_order_id)
    return dict((await conn.execute(query)).one()._mapping)


async def record_fill(
    conn: AsyncConnection, fill: FillIn, *, now: datetime, source: str = "callback"
) -> dict[str, Any]:
    """Store ``fill`` and apply it to the order and position, once per ``fill_id``."""
    new = await insert_once(
        conn,
        fills,
        {
            "fill_id": fill.fill_id,
            "client_order_id": fill.client_order_id,
            "qty": fill.qty,
            "price_cents": to_cents(fill.price),
            "source": source,
            "recorded_at": now,
        },
    )
    if not new:
        return {"fill_id": fill.fill_id, "applied": False}
    # lock the order: two different fills of it may be applied at once (push and poll)
    query = trade_orders.select().where(trade_orders.c.client_order_id == fill.client_order_id)
    order = (await conn.execute(store_of(conn).sql.lock_row(query))).one_or_none()
    if order is None:
        raise UnknownTradeOrder(f"fill {fill.fill_id} is for an unknown order")
    filled = order.filled_qty + fill.qty
    await conn.execute(
        trade_orders.update()
        .where(trade_orders.c.client_order_id == fill.client_order_id)
        .values(
            filled_qty=filled,
            status="filled" if filled >= order.qty else "partial",
            updated_at=now,
        )
    )
    signed = fill.qty if order.side == "buy" else -fill.qty
    cost = signed * to_cents(fill.price)
    await insert_once(conn, positions, {"symbol": order.symbol, "qty": 0, "cost_cents": 0})
    await conn.execute(
        positions.update()
        .where(positions.c.symbol == order.symbol)
        .values(qty=positions.c.qty + signed, cost_cents=positions.c.cost_cents + cost)
    )
    return {"fill_id": fill.fill_id, "applied": True}


async def fetch_exchange_order(
    http: httpx.AsyncClient, client_order_id: str
) -> dict[str, Any] | None:
    """The exchange's view of an order (with every fill so far), or None if it has none."""
    try:
        answer = await http.get(f"/orders/{client_order_id}")
    except httpx.HTTPError as exc:
        raise TransientError(f"exchange unreachable: {exc}") from exc
    if answer.status_code == 404:
        return None
    if answer.status_code >= 500:
        raise TransientError(f"exchange answered {answer.status_code}")
    answer.raise_for_status()
    order: dict[str, Any] = answer.json()
    return order


async def recover_fills(store: Store, http: httpx.AsyncClient) -> int:
    """Ask the exchange about every open order and apply what was missed; returns how many."""
    async with store.read() as conn:
        open_ids = (
            await conn.execute(
                sa.select(trade_orders.c.client_order_id).where(trade_orders.c.status != "filled")
            )
        ).scalars()
        open_ids_list = list(open_ids)
    applied = 0
    for client_order_id in open_ids_list:
        order = await fetch_exchange_order(http, client_order_id)
        for raw in (order or {}).get("fills", []):
            async with store.begin() as conn:
                result = await record_fill(
                    conn, FillIn.model_validate(raw), now=store.clock.now(), source="poll"
                )
            applied += int(result["applied"])
    return applied


class FillPoller:
    """A background loop (``run(stop)``) that recovers missed fills every ``interval`` seconds."""

    def __init__(self, store: Store, exchange_url: str, interval: float = 1.0) -> None:
        self.store = store
        self.exchange_url = exchange_url
        self.interval = interval
        self.recovered = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.exchange_url, timeout=5) as http:
            while not stop.is_set():
                try:
                    self.recovered += await recover_fills(self.store, http)
                except (TransientError, StoreUnavailable) as exc:
                    log.info("fill recovery will retry: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)


router = APIRouter(tags=["trading"])


@router.post("/trading/fills")
async def receive_fill(fill: FillIn, request: Request) -> dict[str, Any]:
    """The exchange's callback: each fill is applied once, however often it arrives."""
    store: Store = request.app.state.store
    try:
        async with store.begin() as conn:
            return await record_fill(conn, fill, now=store.clock.now())
    except UnknownTradeOrder as exc:  # the fill's insert rolled back with it
        raise Problem(422, "unknown-trade-order", str(exc)) from None


def position_view(row: Any) -> dict[str, Any]:
    return {"symbol": row.symbol, "qty": row.qty, "cost": money(row.cost_cents)}
