from __future__ import annotations

import asyncio
import json

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.http.problem import install_problem_handlers
from convergent.store import Store
from convergent.webhooks import ReceivedWebhook, new_secret, sign, webhook_router

SECRET = new_secret()
effects = sa.Table(
    "test_webhook_effects",
    sa.MetaData(),
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("webhook_id", sa.String(64), nullable=False),
)


def app_for(store: Store) -> FastAPI:
    async def apply(conn: AsyncConnection, hook: ReceivedWebhook) -> None:
        await conn.execute(effects.insert().values(webhook_id=hook.id))

    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(
        webhook_router("/in", store=store, secrets=[SECRET], consumer="test", handler=apply)
    )
    return app


def signed(store: Store, message_id: str = "msg_1", secret: str = SECRET) -> dict[str, object]:
    body = json.dumps({"type": "order.paid", "data": {"id": "o-1"}}).encode()
    stamp = int(store.clock.now().timestamp())
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, message_id, stamp, body),
        "content-type": "application/json",
    }
    return {"content": body, "headers": headers}


async def count_effects(store: Store) -> int:
    async with store.read() as conn:
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(effects))).scalar_one()
        )


async def client(store: Store) -> httpx.AsyncClient:
    async with store.begin() as conn:
        await conn.run_sync(effects.metadata.create_all)
    transport = httpx.ASGITransport(app=app_for(store))
    return httpx.AsyncClient(transport=transport, base_url="http://shop")


async def test_a_redelivered_webhook_has_its_effect_once(wstore: Store) -> None:
    async with await client(wstore) as http:
        first = await http.post("/in", **signed(wstore))  # type: ignore[arg-type]
        again = await http.post("/in", **signed(wstore))  # type: ignore[arg-type]
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert await count_effects(wstore) == 1


async def test_concurrent_duplicates_have_their_effect_once(wstore: Store) -> None:
    async with await client(wstore) as http:
        answers = await asyncio.gather(
            *(http.post("/in", **signed(wstore)) for _ in range(5))  # type: ignore[arg-type]
        )
    assert [a.status_code for a in answers] == [200] * 5
    assert await count_effects(wstore) == 1


async def test_a_badly_signed_webhook_is_a_401_problem_without_effect(wstore: Store) -> None:
    async with await client(wstore) as http:
        bad = await http.post("/in", **signed(wstore, secret=new_secret()))  # type: ignore[arg-type]
    assert bad.status_code == 401
    assert bad.headers["content-type"] == "application/problem+json"
    assert await count_effects(wstore) == 0
