"""The shop's POST /orders behind the middleware, in-process (the acceptance tests run it live)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from convergent.store import Store
from convergent_shop.app import create_app
from convergent_shop.db import create_shop_tables
from tests.shop_keys import client_key

ORDER = {"customer_id": "c1", "items": [{"sku": "s", "qty": 1}], "amount": "5", "currency": "EUR"}


@pytest.fixture
async def shop(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(database_url)
    async with store.begin() as conn:
        await create_shop_tables(conn)
    transport = httpx.ASGITransport(app=create_app(store, migrate=False))
    key = await client_key(store, "a")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://shop", headers={"X-Api-Key": key}
    ) as http:
        yield http
    await store.close()


async def test_post_orders_requires_an_idempotency_key(shop: httpx.AsyncClient) -> None:
    response = await shop.post("/orders", json=ORDER, headers={})
    assert response.status_code == 400
    assert response.json()["type"].endswith("/idempotency-key-missing")


async def test_post_orders_requires_the_client_api_key(shop: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k", "X-Api-Key": ""}
    response = await shop.post("/orders", json=ORDER, headers=headers)
    assert response.status_code == 401


async def test_a_replayed_order_points_at_the_same_order(shop: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "k"}
    first = await shop.post("/orders", json=ORDER, headers=headers)
    again = await shop.post("/orders", json=ORDER, headers=headers)
    assert first.status_code == 202
    assert again.headers["Location"] == first.headers["Location"]
    assert (await shop.get(first.headers["Location"])).status_code == 200


async def test_an_order_failing_validation_stores_nothing_so_the_fix_can_reuse_the_key(
    shop: httpx.AsyncClient,
) -> None:
    headers = {"Idempotency-Key": "k"}
    bad = await shop.post("/orders", json={**ORDER, "currency": "euro"}, headers=headers)
    fixed = await shop.post("/orders", json=ORDER, headers=headers)
    assert bad.status_code == 422
    assert fixed.status_code == 202
    assert "idempotent-replayed" not in fixed.headers
