"""The shop's booking confirmer, driven by the notifier, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.resources import wait_for
from convergent.store import Store
from convergent_shop.bookings import BOOKINGS, run_confirmer
from convergent_shop.db import create_shop_tables


async def add_booking(store: Store, code: str, party_size: int) -> Any:
    async with store.begin() as conn:
        await create_shop_tables(conn)
        row = await BOOKINGS.bind(store).create(
            conn,
            {
                "client": "c",
                "code": code,
                "fingerprint": "f",
                "restaurant": "r",
                "time": store.clock.now() + timedelta(days=2),
                "party_size": party_size,
                "name": "n",
            },
        )
    return row


async def test_the_confirmer_wakes_on_a_new_booking_instead_of_waiting_for_its_poll(
    store: Store,
) -> None:
    async with store.begin() as conn:
        await create_shop_tables(conn)
    stop = asyncio.Event()
    confirmer = asyncio.create_task(run_confirmer(store, stop, poll_interval=30))
    try:
        await asyncio.sleep(0)  # let it subscribe and finish its first (empty) round
        small = await add_booking(store, "small", 2)
        big = await add_booking(store, "big", 30)

        async def load(conn: AsyncConnection) -> Any:
            return await BOOKINGS.get(conn, big.id)

        settled = await wait_for(
            store, "booking", big.id, load, lambda r: r.state != "pending", timeout=10
        )  # well before the confirmer's own 30 s poll: only a wake-up can settle it in time
        async with store.read() as conn:
            confirmed = await BOOKINGS.get(conn, small.id)
    finally:
        stop.set()
        confirmer.cancel()
        await asyncio.gather(confirmer, return_exceptions=True)
    assert settled.state == "failed"
    assert confirmed is not None
    assert confirmed.state == "ready"
