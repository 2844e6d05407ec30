"""`Depends(Idempotent())` on the route: OpenAPI shows the header and the problem answers, and the
middleware (routes=None) protects exactly the declaring routes, wherever they are mounted."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI

from convergent.http import (
    IDEMPOTENCY_RESPONSES,
    IdempotencyMiddleware,
    Idempotent,
    Transaction,
    header_principal,
    install_problem_handlers,
)
from convergent.store import Store

payments = sa.Table(
    "declared_payments",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(255), nullable=False),
)


def build(store: Store, *, guarded: bool = True) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    router = APIRouter(prefix="/v2")  # a moved route keeps its protection

    @router.post("/payments", status_code=201, responses=IDEMPOTENCY_RESPONSES)
    async def pay(key: Annotated[str, Depends(Idempotent())], conn: Transaction) -> dict[str, int]:
        made = await conn.execute(payments.insert().values(key=key))
        assert made.inserted_primary_key is not None
        return {"id": int(made.inserted_primary_key[0])}

    @router.post("/notes", status_code=201, dependencies=[Depends(Idempotent())])
    async def note(conn: Transaction) -> dict[str, str]:
        await conn.execute(payments.insert().values(key="note"))
        return {"ok": "yes"}

    @app.post("/open")
    async def open_route() -> dict[str, str]:
        return {"ok": "open"}

    app.include_router(router)
    if guarded:
        app.add_middleware(
            IdempotencyMiddleware, store=store, principal=header_principal("X-Api-Key")
        )
    return app


async def _count(store: Store) -> int:
    async with store.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(payments)) or 0)


@pytest.fixture
async def migrated(store: Store) -> Store:
    await store.migrate()
    async with store.begin() as conn:
        await conn.run_sync(payments.metadata.create_all)
    return store


async def test_a_declared_route_runs_once_per_key_and_replays(migrated: Store) -> None:
    app = build(migrated)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        headers = {"X-Api-Key": "alice", "Idempotency-Key": "pay-1"}
        first = await client.post("/v2/payments", json={}, headers=headers)
        again = await client.post("/v2/payments", json={}, headers=headers)
        missing = await client.post("/v2/payments", json={}, headers={"X-Api-Key": "alice"})
        other = await client.post("/v2/payments", json={"x": 1}, headers=headers)
        note = await client.post("/v2/notes", headers={"X-Api-Key": "a", "Idempotency-Key": "n"})
        opened = await client.post("/open")  # not declared: not guarded, no key needed
    assert first.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert missing.status_code == 400
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert other.status_code == 422  # same key, another body
    assert note.status_code == 201
    assert opened.json() == {"ok": "open"}
    assert await _count(migrated) == 2  # one payment, one note


async def test_openapi_shows_the_header_and_the_problem_answers(migrated: Store) -> None:
    app = build(migrated)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        doc = (await client.get("/openapi.json")).json()
    for path in ("/v2/payments", "/v2/notes"):
        operation = doc["paths"][path]["post"]
        header = [p for p in operation["parameters"] if p["in"] == "header"]
        assert [(p["name"], p["required"]) for p in header] == [("Idempotency-Key", True)]
        for status in ("400", "409", "422"):
            content = operation["responses"][status]["content"]
            assert "application/problem+json" in content
    assert "parameters" not in doc["paths"]["/open"]["post"]


async def test_a_declared_route_without_the_middleware_refuses_to_run(migrated: Store) -> None:
    app = build(migrated, guarded=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post(
            "/v2/payments", json={}, headers={"X-Api-Key": "a", "Idempotency-Key": "k"}
        )
    assert answer.status_code == 500
    assert await _count(migrated) == 0  # never ran unprotected
