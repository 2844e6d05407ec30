"""The engine's contract, on SQLite and PostgreSQL, without HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.errors import IdempotencyKeyInProgress, IdempotencyKeyMismatch
from convergent.idempotency import IdempotencyKeys, Lease, StoredResponse, purge_expired_keys
from convergent.store import Store

OK = StoredResponse(201, [("content-type", "application/json")], b'{"ok":true}')


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[IdempotencyKeys]:
    store = Store(database_url, clock=ManualClock())
    try:
        yield IdempotencyKeys(store, lock_timeout=60, retention=3600)
    finally:
        await store.close()


def clock(keys: IdempotencyKeys) -> ManualClock:
    assert isinstance(keys.store.clock, ManualClock)
    return keys.store.clock


async def test_a_new_key_is_leased_to_its_first_request(keys: IdempotencyKeys) -> None:
    assert isinstance(await keys.acquire("s", "k", "fp"), Lease)


async def test_a_completed_key_returns_its_stored_response(keys: IdempotencyKeys) -> None:
    lease = await keys.acquire("s", "k", "fp")
    assert isinstance(lease, Lease)
    async with keys.store.begin() as conn:
        await keys.complete(conn, lease, OK)
    assert await keys.acquire("s", "k", "fp") == OK


async def test_a_held_key_is_in_progress_for_everyone_else(keys: IdempotencyKeys) -> None:
    await keys.acquire("s", "k", "fp")
    with pytest.raises(IdempotencyKeyInProgress):
        await keys.acquire("s", "k", "fp")


async def test_a_different_fingerprint_is_a_mismatch(keys: IdempotencyKeys) -> None:
    await keys.acquire("s", "k", "fp")
    with pytest.raises(IdempotencyKeyMismatch):
        await keys.acquire("s", "k", "other")


async def test_scopes_never_share_keys(keys: IdempotencyKeys) -> None:
    await keys.acquire("s1", "k", "fp")
    assert isinstance(await keys.acquire("s2", "k", "other"), Lease)


async def test_a_released_key_can_be_leased_again(keys: IdempotencyKeys) -> None:
    lease = await keys.acquire("s", "k", "fp")
    assert isinstance(lease, Lease)
    await keys.release(lease)
    assert isinstance(await keys.acquire("s", "k", "fp"), Lease)


async def test_a_lease_taken_over_after_its_timeout_cannot_complete(
    keys: IdempotencyKeys,
) -> None:
    stale = await keys.acquire("s", "k", "fp")
    assert isinstance(stale, Lease)
    clock(keys).advance(61)
    fresh = await keys.acquire("s", "k", "fp")
    assert isinstance(fresh, Lease)
    with pytest.raises(IdempotencyKeyInProgress):
        async with keys.store.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE idem_effect (x INTEGER)"))
            await keys.complete(conn, stale, OK)
    async with keys.store.begin() as conn:
        await keys.complete(conn, fresh, OK)
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert "idem_effect" not in tables  # the stale request's writes rolled back
    assert await keys.acquire("s", "k", "fp") == OK


async def test_purge_keeps_live_keys_and_drops_expired_ones(keys: IdempotencyKeys) -> None:
    done = await keys.acquire("s", "done", "fp")
    assert isinstance(done, Lease)
    async with keys.store.begin() as conn:
        await keys.complete(conn, done, OK)
    await keys.acquire("s", "running", "fp")
    clock(keys).advance(59)
    assert await purge_expired_keys(keys.store) == 0  # a live lock stays
    clock(keys).advance(2)
    assert await purge_expired_keys(keys.store) == 1  # its request died: nothing left stuck
    again = await keys.acquire("s", "running", "fp")
    assert isinstance(again, Lease)
    await keys.release(again)
    clock(keys).advance(3599 - 61)
    assert await purge_expired_keys(keys.store) == 0  # the answer is kept for its retention
    clock(keys).advance(2)
    assert await purge_expired_keys(keys.store) == 1
    assert isinstance(await keys.acquire("s", "done", "fp"), Lease)
