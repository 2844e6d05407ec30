"""Different fills of one trade order applied at the same moment are all counted."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import sqlalchemy as sa

from convergent.store import Store
from convergent_shop import trading


async def test_concurrent_fills_of_one_order_are_all_counted(shop_store: Store) -> None:
    store = shop_store
    async with store.begin() as conn:
        await trading.place_order(
            conn, client_order_id="t-1", symbol="ACME", side="buy", qty=20, now=store.clock.now()
        )

    async def apply(n: int) -> None:
        fill = trading.FillIn(client_order_id="t-1", fill_id=f"f-{n}", qty=1, price=Decimal("10"))
        async with store.begin() as conn:
            await trading.record_fill(conn, fill, now=store.clock.now())

    await asyncio.gather(*(apply(n) for n in range(20)))
    async with store.read() as conn:
        order = (
            await conn.execute(
                sa.select(trading.trade_orders.c.filled_qty, trading.trade_orders.c.status)
            )
        ).one()
        position = (await conn.execute(sa.select(trading.positions.c.qty))).scalar_one()
    assert (order.filled_qty, order.status, position) == (20, "filled", 20)
