"""API keys on the real shop: 401 without one, 404 for another client's things, admin for operators.

Keys are issued the way `convergent keys create` issues them; the shop stores the key's id and
shows its name, never the key itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa

from convergent.store import Store
from tests.acceptance.conftest import Server
from tests.acceptance.resources.harness import database_for, running_shop

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "A", "qty": 1}],
    "amount": "1.00",
    "currency": "EUR",
}
BOOKING = {"restaurant": "r", "time": "2031-01-01T19:00:00+00:00", "party_size": 2, "name": "Ada"}
PUBLIC_HOOK = "https://93.184.215.14/hook"  # a public address: no DNS needed


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("authz")
    with running_shop(database_for(request, tmp), tmp) as server:
        yield server


def problem(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_missing_or_unknown_key_is_401(shop: Server) -> None:
    for name in (None, "unknown"):
        headers = {"X-Api-Key": "cvk_abc_def"} if name else {}
        with shop.client(None, headers=headers) as http:
            problem(http.get("/orders/0190a000-0000-7000-8000-000000000000"), 401)
            problem(http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"}), 401)
            problem(http.post("/orders", json=ORDER), 401)
            problem(http.put("/customers/c1", json={"name": "A", "email": "a@x.io"}), 401)
            problem(http.get("/webhooks/endpoints"), 401)
            problem(http.put("/bookings/b1", json=BOOKING), 401)


def test_another_clients_things_are_404(shop: Server) -> None:
    with shop.client("alice") as alice, shop.client("bob") as bob:
        order = alice.post("/orders", json=ORDER, headers={"Idempotency-Key": "authz-1"})
        assert order.status_code == 202, order.text
        path = f"/orders/{order.json()['id']}"
        problem(bob.get(path), 404)
        problem(bob.get(path + "/history"), 404)
        problem(bob.post(path + "/cancel", headers={"If-Match": order.headers["ETag"]}), 404)
        # the same idempotency key is bob's own: a new order, not alice's replay
        other = bob.post("/orders", json=ORDER, headers={"Idempotency-Key": "authz-1"})
        assert other.json()["id"] != order.json()["id"]
        assert alice.get(path).status_code == 200

        assert (
            alice.put("/customers/c-authz", json={"name": "A", "email": "a@x.io"}).status_code
            == 200
        )
        problem(bob.get("/customers/c-authz"), 404)
        problem(bob.put("/customers/c-authz", json={"name": "B", "email": "b@x.io"}), 404)
        problem(bob.delete("/customers/c-authz"), 404)
        assert alice.get("/customers/c-authz").json()["name"] == "A"

        assert alice.put("/bookings/authz-b1", json=BOOKING).status_code in (201, 202)
        problem(bob.get("/bookings/authz-b1"), 404)

        made = alice.post("/webhooks/endpoints", json={"url": PUBLIC_HOOK})
        assert made.status_code == 201, made.text
        hook = f"/webhooks/endpoints/{made.json()['id']}"
        for method in ("GET", "DELETE"):
            problem(bob.request(method, hook), 404)
        problem(bob.patch(hook, json={"enabled": False}), 404)
        problem(bob.get(hook + "/attempts"), 404)
        assert bob.get("/webhooks/endpoints").json() == []
        assert [e["id"] for e in alice.get("/webhooks/endpoints").json()] == [made.json()["id"]]


def test_rotating_a_secret_needs_an_admin_key(shop: Server) -> None:
    with shop.client("owner") as owner, shop.client("ops", headers={}) as ops:
        shop.key("root", admin=True)
        made = owner.post("/webhooks/endpoints", json={"url": PUBLIC_HOOK}).json()
        rotate = f"/webhooks/endpoints/{made['id']}/rotate-secret"
        problem(owner.post(rotate), 403)
        problem(ops.post(rotate), 403)
        admin = ops.post(rotate, headers={"X-Api-Key": shop.key("root")})
        assert admin.status_code == 200
        assert admin.json()["secret"].startswith("whsec_")


def test_histories_and_tables_hold_the_keys_name_never_the_key(shop: Server) -> None:
    with shop.client("carol") as carol:
        order = carol.post("/orders", json=ORDER, headers={"Idempotency-Key": "authz-h"}).json()
        history = carol.get(f"/orders/{order['id']}/history")
    assert shop.key("carol") not in history.text
    assert {e["actor"] for e in history.json()["items"] if e.get("actor")} == {"carol"}
    assert shop.key("carol") not in dump_orders(shop.database_url)


def dump_orders(database_url: str) -> str:
    async def dump() -> str:
        store = Store(database_url)
        try:
            async with store.read() as conn:
                rows = (await conn.execute(sa.text("SELECT * FROM shop_orders"))).all()
            return repr(rows)
        finally:
            await store.close()

    return asyncio.run(dump())
