"""A running request renews its short lock: a retry waits (409), it never runs the handler twice."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from convergent.http.middleware import IdempotencyMiddleware, header_principal
from convergent.store import Store


async def test_a_request_running_past_its_lock_timeout_is_never_taken_over(
    database_url: str,
) -> None:
    store = Store(database_url)  # the real clock: the lease expires in real time
    runs = 0
    app = FastAPI()

    @app.post("/slow")
    async def slow() -> dict[str, int]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(1.5)  # five lock timeouts
        return {"runs": runs}

    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        routes=[("POST", "/slow")],
        principal=header_principal("X-Api-Key"),
        lock_timeout=0.3,
    )
    headers = {"X-Api-Key": "a", "Idempotency-Key": "k"}
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first = asyncio.create_task(http.post("/slow", headers=headers))
            await asyncio.sleep(0.9)
            # PostgreSQL: 409 while the first runs; SQLite: the retry queues behind its write
            # lock and replays its answer. Either way the handler never runs a second time.
            during = await http.post("/slow", headers=headers)
            assert during.status_code == 409 or during.headers["idempotent-replayed"] == "true"
            assert (await first).status_code == 200
            replay = await http.post("/slow", headers=headers)
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == {"runs": 1}
        assert runs == 1
    finally:
        await store.close()


async def test_requests_that_lock_at_different_times_are_each_renewed_in_time(
    database_url: str,
) -> None:
    """One timer looks after every running request: each is renewed before its lock runs
    out, whenever it locked relative to the others."""
    store = Store(database_url)
    runs: dict[str, int] = {}
    app = FastAPI()

    @app.post("/slow/{name}")
    async def slow(name: str) -> dict[str, int]:
        runs[name] = runs.get(name, 0) + 1
        await asyncio.sleep(1.2)  # four lock timeouts
        return {"runs": runs[name]}

    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        routes=[("POST", "/slow/{name}")],
        principal=header_principal("X-Api-Key"),
        lock_timeout=0.3,
    )
    names = ["a", "b", "c"]
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            first: list[asyncio.Task[httpx.Response]] = []
            for name in names:  # locked 0.13 s apart: not in step with the renewals
                headers = {"X-Api-Key": "a", "Idempotency-Key": name}
                first.append(asyncio.create_task(http.post(f"/slow/{name}", headers=headers)))
                await asyncio.sleep(0.13)
            await asyncio.sleep(0.6)  # every lock has been renewed at least once by now
            for name in names:
                headers = {"X-Api-Key": "a", "Idempotency-Key": name}
                during = await http.post(f"/slow/{name}", headers=headers)
                assert during.status_code == 409 or during.headers["idempotent-replayed"] == "true"
            assert [(await task).status_code for task in first] == [200, 200, 200]
        assert runs == {"a": 1, "b": 1, "c": 1}
    finally:
        await store.close()
