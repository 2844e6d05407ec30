from __future__ import annotations

import asyncio
from datetime import timedelta

from convergent.store import Store
from convergent.store.inbox import purge_inbox, record_once


async def test_a_message_is_recorded_once_per_consumer(store: Store) -> None:
    now = store.clock.now()
    async with store.begin() as conn:
        assert await record_once(conn, "billing", "m-1", now) is True
        assert await record_once(conn, "billing", "m-1", now) is False
        assert await record_once(conn, "analytics", "m-1", now) is True


async def test_a_rolled_back_handler_leaves_the_message_unrecorded(store: Store) -> None:
    now = store.clock.now()
    try:
        async with store.begin() as conn:
            await record_once(conn, "billing", "m-1", now)
            raise RuntimeError("handler failed")
    except RuntimeError:
        pass
    async with store.begin() as conn:
        assert await record_once(conn, "billing", "m-1", now) is True


async def test_concurrent_duplicates_take_effect_once(store: Store) -> None:
    now = store.clock.now()

    async def deliver() -> bool:
        async with store.begin() as conn:
            return await record_once(conn, "billing", "m-1", now)

    results = await asyncio.gather(*(deliver() for _ in range(20)))
    assert results.count(True) == 1


async def test_purge_forgets_only_old_ids(store: Store) -> None:
    now = store.clock.now()
    async with store.begin() as conn:
        await record_once(conn, "c", "old", now - timedelta(days=8))
        await record_once(conn, "c", "new", now)
        assert await purge_inbox(conn, now - timedelta(days=7)) == 1
        assert await record_once(conn, "c", "new", now) is False
