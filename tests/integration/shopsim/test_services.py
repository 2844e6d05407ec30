"""The shop's domain services: each call is safe to repeat with the same key."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from convergent.store import Store
from convergent_shop import inventory, shipping

ITEMS = [{"sku": "apple", "qty": 2}, {"sku": "pear", "qty": 1}]


async def stock_of(store: Store, sku: str) -> dict[str, int]:
    async with store.read() as conn:
        query = inventory.stock.select().where(inventory.stock.c.sku == sku)
        row = (await conn.execute(query)).one()
    return {"available": row.available, "reserved": row.reserved, "shipped": row.shipped}


async def seed(store: Store, **skus: int) -> None:
    async with store.begin() as conn:
        for sku, qty in skus.items():
            await inventory.stock_up(conn, sku, qty)


async def test_reserving_twice_with_one_key_reserves_once(shop_store: Store) -> None:
    await seed(shop_store, apple=10, pear=10)
    for _ in range(2):
        async with shop_store.begin() as conn:
            result = await inventory.reserve(conn, "o1", ITEMS, "k1", shop_store.clock.now())
        assert result["status"] == "reserved"
    assert await stock_of(shop_store, "apple") == {"available": 8, "reserved": 2, "shipped": 0}


async def test_a_short_reservation_is_rejected_and_takes_nothing(shop_store: Store) -> None:
    await seed(shop_store, apple=10, pear=0)
    async with shop_store.begin() as conn:
        result = await inventory.reserve(conn, "o1", ITEMS, "k1", shop_store.clock.now())
    assert result["status"] == "rejected"
    assert await stock_of(shop_store, "apple") == {"available": 10, "reserved": 0, "shipped": 0}


async def test_releasing_twice_gives_stock_back_once(shop_store: Store) -> None:
    await seed(shop_store, apple=10, pear=10)
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        await inventory.reserve(conn, "o1", ITEMS, "k1", now)
    for _ in range(2):
        async with shop_store.begin() as conn:
            await inventory.release(conn, "o1", "r1", now)
    assert await stock_of(shop_store, "apple") == {"available": 10, "reserved": 0, "shipped": 0}


async def test_a_release_before_its_reserve_makes_the_late_reserve_take_nothing(
    shop_store: Store,
) -> None:
    await seed(shop_store, apple=10, pear=10)
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        await inventory.release(conn, "o1", "r1", now)
    async with shop_store.begin() as conn:
        late = await inventory.reserve(conn, "o1", ITEMS, "k1", now)
    assert late["status"] == "released"
    assert (await stock_of(shop_store, "apple"))["available"] == 10


async def test_shipping_moves_reserved_stock_to_shipped_once(shop_store: Store) -> None:
    await seed(shop_store, apple=10, pear=10)
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        await inventory.reserve(conn, "o1", ITEMS, "k1", now)
    for _ in range(2):
        async with shop_store.begin() as conn:
            await inventory.ship(conn, "o1", "s1", now)
    assert await stock_of(shop_store, "apple") == {"available": 8, "reserved": 0, "shipped": 2}


async def test_concurrent_reservations_never_oversell_and_conserve_stock(
    shop_store: Store,
) -> None:
    await seed(shop_store, apple=7, pear=100)
    now = shop_store.clock.now()

    async def order(n: int) -> str:
        async with shop_store.begin() as conn:
            result = await inventory.reserve(conn, f"o{n}", ITEMS, f"k{n}", now)
        return str(result["status"])

    outcomes = await asyncio.gather(*(order(n) for n in range(10)))
    assert outcomes.count("reserved") == 3  # 3 x 2 apples fit in 7
    assert await stock_of(shop_store, "apple") == {"available": 1, "reserved": 6, "shipped": 0}
    async with shop_store.read() as conn:
        assert await inventory.conservation_violations(conn) == []


async def test_the_conservation_check_finds_a_sku_that_does_not_add_up(
    shop_store: Store,
) -> None:
    await seed(shop_store, apple=5)
    async with shop_store.begin() as conn:
        await conn.execute(sa.update(inventory.stock).values(available=4))
        assert [v["sku"] for v in await inventory.conservation_violations(conn)] == ["apple"]


async def test_creating_a_shipment_twice_returns_the_same_shipment(shop_store: Store) -> None:
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        first = await shipping.create_shipment(conn, "o1", "k1", now)
    async with shop_store.begin() as conn:
        again = await shipping.create_shipment(conn, "o1", "k1", now)
    assert again["tracking"] == first["tracking"]
    assert again["status"] == "created"


async def test_a_cancel_before_create_makes_the_late_shipment_cancelled(shop_store: Store) -> None:
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        await shipping.cancel_shipment(conn, "o1", "c1", now)
    async with shop_store.begin() as conn:
        late = await shipping.create_shipment(conn, "o1", "k1", now)
    assert late["status"] == "cancelled"
