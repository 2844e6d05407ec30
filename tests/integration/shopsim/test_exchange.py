"""The fake exchange and the shop's trading service: every fill counted exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa

from convergent.store import Store
from convergent_shop import trading
from convergent_shop.app import create_app
from convergent_shop.exchange import Exchange, ExchangeConfig, create_exchange_app
from convergent_shop.sim.servers import serve_app


@dataclass
class Market:
    exchange: Exchange
    http: httpx.AsyncClient
    store: Store
    shop_url: str

    async def buy(self, client_order_id: str, qty: int) -> None:
        async with self.store.begin() as conn:
            await trading.place_order(
                conn,
                client_order_id=client_order_id,
                symbol="ACME",
                side="buy",
                qty=qty,
                now=self.store.clock.now(),
            )
        body = {"client_order_id": client_order_id, "qty": qty}
        answer = await self.http.post("/orders", json=body)
        assert answer.status_code == 201
        await self.exchange.settled()

    async def position(self) -> int:
        async with self.store.read() as conn:
            qty = (await conn.execute(sa.select(trading.positions.c.qty))).scalar_one_or_none()
        return int(qty or 0)


@pytest.fixture
async def market(shop_store: Store) -> AsyncIterator[Market]:
    exchange = Exchange(ExchangeConfig(fill_interval_ms=5, max_parts=4, seed=7))
    async with (
        serve_app(create_app(shop_store)) as shop_url,
        serve_app(create_exchange_app(exchange)) as exchange_url,
        httpx.AsyncClient(base_url=exchange_url) as http,
    ):
        market = Market(exchange, http, shop_store, shop_url)
        with_faults(market, callback_url=f"{shop_url}/trading/fills")
        yield market


def with_faults(market: Market, **rates: object) -> None:
    market.exchange.configure(market.exchange.config.model_copy(update=rates))


async def test_partial_fills_are_delivered_and_applied(market: Market) -> None:
    await market.buy("t1", 10)
    order = (await market.http.get("/orders/t1")).json()
    assert order["status"] == "filled"
    assert sum(f["qty"] for f in order["fills"]) == 10
    assert await market.position() == 10


async def test_duplicated_fills_are_applied_once(market: Market) -> None:
    with_faults(market, duplicate_fill_rate=1.0)
    await market.buy("t1", 10)
    assert market.exchange.counters["duplicated"] > 0
    assert await market.position() == 10


async def test_lost_fills_are_recovered_by_polling(market: Market) -> None:
    with_faults(market, lost_fill_rate=1.0)
    await market.buy("t1", 10)
    assert await market.position() == 0
    recovered = await trading.recover_fills(market.store, market.http)
    assert recovered == len(market.exchange.orders["t1"]["fills"])
    assert await market.position() == 10


async def test_polling_after_partial_delivery_never_double_counts(market: Market) -> None:
    with_faults(market, lost_fill_rate=0.5, duplicate_fill_rate=0.5)
    for n in range(4):
        await market.buy(f"t{n}", 9)
    await trading.recover_fills(market.store, market.http)
    assert await trading.recover_fills(market.store, market.http) == 0
    assert await market.position() == 36


async def test_reusing_a_client_order_id_for_another_order_is_refused(market: Market) -> None:
    await market.buy("t1", 10)
    again = await market.http.post("/orders", json={"client_order_id": "t1", "qty": 11})
    assert again.status_code == 422
