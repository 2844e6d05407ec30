"""A booking is confirmed by its durable run, then archived by timer one day before its date."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.store import Store
from convergent.workflows import Worker
from convergent_shop.app import create_app
from convergent_shop.bookings import bookings
from convergent_shop.db import create_shop_tables
from tests.shop_keys import client_key

START = datetime(2031, 5, 1, 12, tzinfo=UTC)


@pytest.fixture
async def clocked(database_url: str) -> AsyncIterator[tuple[Store, ManualClock]]:
    clock = ManualClock(START)
    async with Store(database_url, clock=clock) as store:
        async with store.begin() as conn:
            await create_shop_tables(conn)
        yield store, clock


async def state_of(store: Store, code: str) -> str:
    async with store.read() as conn:
        return str(
            (
                await conn.execute(sa.select(bookings.c.state).where(bookings.c.code == code))
            ).scalar_one()
        )


async def until_state(store: Store, code: str, want: str, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while (got := await state_of(store, code)) != want:
        assert asyncio.get_running_loop().time() < deadline, f"still {got}, wanted {want}"
        await asyncio.sleep(0.05)


async def test_a_booking_is_confirmed_then_archived_a_day_before_its_date(
    clocked: tuple[Store, ManualClock],
) -> None:
    store, clock = clocked
    app = create_app(store, loops=False)
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(store, poll_interval=0.05).run(stop))
    body = {
        "restaurant": "r",
        "time": (START + timedelta(days=3)).isoformat(),
        "party_size": 4,
        "name": "Ada",
    }
    try:
        transport = httpx.ASGITransport(app=app)
        key = await client_key(store, "c")
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            made = await http.put("/bookings/b-1", json=body, headers={"X-Api-Key": key})
        assert made.status_code in (201, 202)
        await until_state(store, "b-1", "ready")

        clock.advance(timedelta(days=1, hours=23).total_seconds())  # one hour too early
        await asyncio.sleep(0.5)
        assert await state_of(store, "b-1") == "ready"

        clock.advance(timedelta(hours=1, seconds=1).total_seconds())
        await until_state(store, "b-1", "archived")
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
