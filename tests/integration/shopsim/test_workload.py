"""The workload against a real shop: retries with the same key, tolerates missing routes."""

from __future__ import annotations

import asyncio

from convergent.store import Store
from convergent_shop.app import create_app
from convergent_shop.sim.servers import serve_app
from convergent_shop.sim.workload import Workload, WorkloadConfig
from tests.shop_keys import client_key


async def test_the_workload_places_orders_and_bookings_with_nothing_missing(
    shop_store: Store,
) -> None:
    async with serve_app(create_app(shop_store, loops=False)) as url:
        key = await client_key(shop_store, "sim")
        config = WorkloadConfig(orders=5, bookings=2, customers=1, seed=1, api_key=key)
        workload = Workload(url, config)
        await workload.run(asyncio.Event())
    assert workload.stats.accepted == 5
    assert workload.stats.bookings == 2
    assert workload.stats.not_available == {}
    assert workload.stats.gave_up == 0
