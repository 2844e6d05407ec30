"""A tiny FastAPI app behind IdempotencyMiddleware, on a ManualClock store, driven in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from convergent.clock import ManualClock
from convergent.http import IdempotencyMiddleware, Transaction, after_commit, header_principal
from convergent.http.problem import install_problem_handlers
from convergent.ids import new_id
from convergent.store import Store

LOCK_TIMEOUT = 60.0
meta = sa.MetaData()
things = sa.Table(
    "idem_things",
    meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("body", sa.JSON(), nullable=False),
)


@dataclass
class Harness:
    store: Store
    clock: ManualClock
    app: FastAPI
    http: httpx.AsyncClient
    calls: int = 0
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def rows(self) -> int:
        async with self.store.read() as conn:
            count = sa.select(sa.func.count()).select_from(things)
            return int((await conn.execute(count)).scalar_one())

    async def keys(self) -> list[Any]:
        async with self.store.read() as conn:
            return list((await conn.execute(self.store.tables.idempotency_keys.select())).all())

    def post(
        self, body: Any = None, key: str | None = "k-1", client: str | None = "a", **kw: Any
    ) -> Coroutine[Any, Any, httpx.Response]:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Idempotency-Key"] = key
        if client is not None:
            headers["X-Api-Key"] = client
        path = kw.pop("path", "/things")
        payload = body if body is not None else {"n": 1}
        return self.http.post(path, json=payload, headers=headers, **kw)


def build_app(h: Harness, store: Store) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/things")
    async def create(request: Request, conn: Transaction) -> Response:
        body = await request.json()
        h.calls += 1
        h.entered.set()
        if h.gate is not None:
            await h.gate.wait()
        thing_id = new_id()
        await conn.execute(things.insert().values(id=thing_id, body=body))
        if body.get("fail") == "500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if body.get("fail") == "raise":
            raise RuntimeError("handler crashed")
        return JSONResponse(
            {"id": thing_id, "n": body.get("n")},
            status_code=201,
            headers={"Location": f"/things/{thing_id}", "ETag": '"1"', "Set-Cookie": "s=1"},
        )

    @app.post("/things/{thing_id}/poke")
    async def poke(thing_id: str) -> dict[str, Any]:
        h.calls += 1
        return {"poked": thing_id}

    @app.post("/waiting")
    async def waiting(request: Request, conn: Transaction) -> Response:
        thing_id = new_id()
        await conn.execute(things.insert().values(id=thing_id, body={}))

        async def final() -> Response:
            async with store.begin() as own:  # the middleware's transaction is over
                rows = await own.execute(sa.select(sa.func.count()).select_from(things))
                return JSONResponse({"id": thing_id, "rows": rows.scalar_one()}, status_code=201)

        assert after_commit(request, final)
        return JSONResponse({"id": thing_id}, status_code=202)

    @app.post("/open")
    async def open_route(conn: Transaction) -> dict[str, str]:
        thing_id = new_id()
        await conn.execute(things.insert().values(id=thing_id, body={}))
        return {"id": thing_id}

    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        routes=[("POST", "/things"), ("POST", "/things/{thing_id}/poke"), ("POST", "/waiting")],
        principal=header_principal("X-Api-Key"),
        lock_timeout=LOCK_TIMEOUT,
    )
    return app


async def make_harness(database_url: str) -> Harness:
    clock = ManualClock()
    store = Store(database_url, clock=clock)
    async with store.begin() as conn:
        await conn.run_sync(meta.create_all)
    h = Harness(store, clock, FastAPI(), httpx.AsyncClient())
    h.app = build_app(h, store)
    transport = httpx.ASGITransport(app=h.app, raise_app_exceptions=False)
    h.http = httpx.AsyncClient(transport=transport, base_url="http://test")
    return h


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[Harness]:
    h = await make_harness(database_url)
    try:
        yield h
    finally:
        await h.http.aclose()
        await h.store.close()
