from __future__ import annotations

import asyncio

import httpx
import pytest

from convergent.idempotency import IdempotencyKeys, StoredResponse, purge_expired_keys
from convergent.store import Store
from tests.integration.idempotency.conftest import LOCK_TIMEOUT, Harness, build_app, make_harness


async def test_a_5xx_answer_stores_nothing_and_a_retry_executes_again(harness: Harness) -> None:
    failed = await harness.post({"fail": "500"})
    assert failed.status_code == 500
    assert await harness.keys() == []
    assert await harness.rows() == 0  # the handler's writes rolled back with it
    retried = await harness.post({"fail": "500"})
    assert retried.status_code == 500
    assert harness.calls == 2


async def test_a_raising_handler_stores_nothing_and_a_retry_executes_again(
    harness: Harness,
) -> None:
    failed = await harness.post({"fail": "raise"})
    assert failed.status_code == 500
    assert await harness.keys() == []
    assert await harness.rows() == 0
    await harness.post({"fail": "raise"})
    assert harness.calls == 2


async def test_a_lock_left_by_a_dead_process_expires_and_a_retry_takes_over(
    harness: Harness,
) -> None:
    await harness.post()  # learn the scope and fingerprint the middleware uses
    (row,) = await harness.keys()
    async with harness.store.begin() as conn:
        await conn.execute(harness.store.tables.idempotency_keys.delete())
    dead = IdempotencyKeys(harness.store, lock_timeout=LOCK_TIMEOUT)
    assert not isinstance(await dead.acquire(row.scope, row.key, row.fingerprint), StoredResponse)
    assert (await harness.post()).status_code == 409
    harness.clock.advance(LOCK_TIMEOUT + 1)
    taken = await harness.post()
    assert taken.status_code == 201
    assert "idempotent-replayed" not in taken.headers
    assert harness.calls == 2


async def test_expired_keys_are_purged_and_then_execute_again(harness: Harness) -> None:
    await harness.post()
    assert await purge_expired_keys(harness.store) == 0
    harness.clock.advance(hours=24, seconds=1)
    assert await purge_expired_keys(harness.store) == 1
    assert (await harness.post()).status_code == 201
    assert harness.calls == 2


async def test_a_stored_response_is_replayed_until_retention_ends(harness: Harness) -> None:
    await harness.post()
    harness.clock.advance(hours=23)
    assert (await harness.post()).headers["Idempotent-Replayed"] == "true"
    harness.clock.advance(hours=1, seconds=1)
    assert "idempotent-replayed" not in (await harness.post()).headers  # not yet purged


async def test_an_unreachable_store_is_a_503_and_the_handler_never_runs(
    database_url: str, tmp_path: pytest.TempPathFactory
) -> None:
    h = await make_harness(database_url)
    try:
        bad_url = (
            f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db"
            if database_url.startswith("sqlite")
            else "postgresql+asyncpg://postgres@127.0.0.1:1/none"
        )
        broken = Store(bad_url)
        app = build_app(h, broken)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            response = await http.post(
                "/things", json={"n": 1}, headers={"Idempotency-Key": "k", "X-Api-Key": "a"}
            )
        await broken.close()
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert h.calls == 0
    finally:
        await h.http.aclose()
        await h.store.close()


async def test_a_request_that_overran_its_lock_commits_nothing_and_gets_409(pg_url: str) -> None:
    # PostgreSQL only: on SQLite the overrunning handler holds the one writer, so no take-over
    # can happen while it runs
    h = await make_harness(pg_url)
    try:
        gate = h.gate = asyncio.Event()
        slow = asyncio.create_task(h.post())
        await asyncio.wait_for(h.entered.wait(), 10)
        h.clock.advance(LOCK_TIMEOUT + 1)
        h.gate = None
        taken = await h.post()
        gate.set()
        lost = await slow
        assert taken.status_code == 201
        assert lost.status_code == 409
        assert await h.rows() == 1
        assert (await h.post()).content == taken.content
    finally:
        await h.http.aclose()
        await h.store.close()
