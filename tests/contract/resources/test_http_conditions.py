"""The shop's conditional requests and Prefer: wait, in process, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from convergent.store import Store
from convergent_shop.app import create_app
from convergent_shop.bookings import confirm_pending
from convergent_shop.db import create_shop_tables
from tests.shop_keys import client_key

FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()
BOOKING = {"restaurant": "Chez Nous", "time": FUTURE, "party_size": 4, "name": "Ada"}
ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "s", "qty": 1}],
    "amount": "5.00",
    "currency": "EUR",
}
NO_WAIT = {"Prefer": "wait=0"}


@pytest.fixture
async def http(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The shop without its background confirmer: tests decide when bookings are confirmed."""
    async with store.begin() as conn:
        await create_shop_tables(conn)
    app = create_app(store, migrate=False)
    transport = httpx.ASGITransport(app=app)
    key = await client_key(store, "client-a")
    async with httpx.AsyncClient(
        transport=transport, base_url="http://shop", headers={"X-Api-Key": key}
    ) as client:
        yield client


async def put_booking(http: httpx.AsyncClient, code: str, **headers: str) -> httpx.Response:
    return await http.put(f"/bookings/{code}", json=BOOKING, headers={**NO_WAIT, **headers})


async def test_prefer_wait_times_out_to_202_with_location_and_retry_after(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.put("/bookings/b1", json=BOOKING, headers={"Prefer": "wait=1"})
    assert answer.status_code == 202
    assert answer.headers["Location"] == "/bookings/b1"
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["Preference-Applied"] == "wait=1"
    assert answer.json()["actions"]["create"] == {"status": "pending"}


async def test_prefer_wait_returns_the_final_booking_as_soon_as_it_is_confirmed(
    http: httpx.AsyncClient, store: Store
) -> None:
    put = asyncio.create_task(http.put("/bookings/b2", json=BOOKING, headers={"Prefer": "wait=20"}))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while await confirm_pending(store) == 0:  # poll until the PUT committed its pending row
        assert loop.time() < deadline
        await asyncio.sleep(0.01)
    confirmed_at = loop.time()
    answer = await asyncio.wait_for(put, 10)
    assert answer.status_code == 201
    assert answer.json()["state"] == "ready"
    assert loop.time() - confirmed_at < 5
    assert answer.headers["Preference-Applied"] == "wait=5"  # capped by the 5 s SLA


async def test_a_repeated_put_returns_the_same_booking(http: httpx.AsyncClient) -> None:
    first = await put_booking(http, "b3")
    again = await put_booking(http, "b3")
    assert again.json()["version"] == first.json()["version"] == 1
    assert again.json()["created_at"] == first.json()["created_at"]


async def test_the_same_code_with_another_body_is_422(http: httpx.AsyncClient) -> None:
    await put_booking(http, "b4")
    other = await http.put("/bookings/b4", json={**BOOKING, "party_size": 5})
    assert other.status_code == 422
    assert other.headers["Content-Type"] == "application/problem+json"


async def test_codes_are_scoped_to_the_client(http: httpx.AsyncClient, store: Store) -> None:
    await put_booking(http, "b5")
    other = await client_key(store, "client-b")
    theirs = await http.get("/bookings/b5", headers={"X-Api-Key": other})
    assert theirs.status_code == 404


async def test_if_none_match_star_creates_once(http: httpx.AsyncClient) -> None:
    first = await put_booking(http, "b6", **{"If-None-Match": "*"})
    second = await put_booking(http, "b6", **{"If-None-Match": "*"})
    assert first.status_code == 202
    assert second.status_code == 412


async def test_get_answers_304_for_a_current_etag(http: httpx.AsyncClient) -> None:
    etag = (await put_booking(http, "b7")).headers["ETag"]
    assert etag == '"1"'
    assert (await http.get("/bookings/b7", headers={"If-None-Match": etag})).status_code == 304


async def test_patch_without_if_match_is_428(http: httpx.AsyncClient) -> None:
    await put_booking(http, "b8")
    answer = await http.patch("/bookings/b8", json={"party_size": 6})
    assert answer.status_code == 428
    assert answer.json()["type"].endswith("precondition-required")


async def test_patch_with_a_stale_etag_is_412_and_changes_nothing(
    http: httpx.AsyncClient,
) -> None:
    await put_booking(http, "b9")
    ok = await http.patch("/bookings/b9", json={"party_size": 6}, headers={"If-Match": '"1"'})
    stale = await http.patch("/bookings/b9", json={"party_size": 8}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200
    assert ok.headers["ETag"] == '"2"'
    assert stale.status_code == 412
    assert (await http.get("/bookings/b9")).json()["party_size"] == 6


async def test_an_oversized_party_fails_with_a_problem_in_its_create_status(
    http: httpx.AsyncClient, store: Store
) -> None:
    await http.put("/bookings/b10", json={**BOOKING, "party_size": 25}, headers=NO_WAIT)
    await confirm_pending(store)
    create = (await http.get("/bookings/b10")).json()["actions"]["create"]
    assert create["status"] == "failed"
    assert "20" in create["problem"]["detail"]


async def test_delete_cancels_and_repeating_it_answers_the_same(http: httpx.AsyncClient) -> None:
    await put_booking(http, "b11")
    first = await http.delete("/bookings/b11")
    again = await http.delete("/bookings/b11")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    history = (await http.get("/bookings/b11/history")).json()["items"]
    assert [e["action"] for e in history] == ["create", "cancel"]


async def test_server_created_code_is_confirmed_exactly_once(http: httpx.AsyncClient) -> None:
    draft = await http.post("/bookings", json=BOOKING)
    assert draft.status_code == 201
    location = draft.headers["Location"]
    assert draft.json()["state"] == "draft"
    answers = [
        await http.put(f"{location}/confirm", headers={"Prefer": "wait=0"}) for _ in range(3)
    ]
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    history = (await http.get(f"{location}/history")).json()["items"]
    assert [e["action"] for e in history] == ["create", "submit"]


async def new_order(http: httpx.AsyncClient) -> dict[str, Any]:
    answer = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"})
    assert answer.status_code == 202
    return dict(answer.json())


async def test_order_cancel_without_if_match_is_428(http: httpx.AsyncClient) -> None:
    order = await new_order(http)
    assert (await http.post(f"/orders/{order['id']}/cancel")).status_code == 428


async def test_order_cancel_with_a_stale_etag_is_412(http: httpx.AsyncClient) -> None:
    order = await new_order(http)
    answer = await http.post(f"/orders/{order['id']}/cancel", headers={"If-Match": '"9"'})
    assert answer.status_code == 412


async def test_order_cancel_when_the_state_forbids_it_is_409(http: httpx.AsyncClient) -> None:
    order = await new_order(http)
    done = await http.post(f"/orders/{order['id']}/cancel", headers={"If-Match": '"1"'})
    again = await http.post(f"/orders/{order['id']}/cancel", headers={"If-Match": '"2"'})
    assert done.status_code == 200
    assert done.json()["state"] == "cancelled"
    assert again.status_code == 409


async def test_order_history_records_creation_and_cancel(http: httpx.AsyncClient) -> None:
    order = await new_order(http)
    await http.post(f"/orders/{order['id']}/cancel", headers={"If-Match": '"1"'})
    history = (await http.get(f"/orders/{order['id']}/history")).json()["items"]
    assert [(e["action"], e["to"]) for e in history] == [
        ("create", "pending"),
        ("cancel", "cancelled"),
    ]


async def test_order_prefer_wait_times_out_to_202(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/orders", json=ORDER, headers={"Idempotency-Key": "k2", "Prefer": "wait=1"}
    )
    assert answer.status_code == 202
    assert answer.headers["Preference-Applied"] == "wait=1"
    assert answer.headers["Location"] == f"/orders/{answer.json()['id']}"


async def test_concurrent_puts_of_one_code_create_one_booking(
    http: httpx.AsyncClient, store: Store
) -> None:
    answers = await asyncio.gather(*(put_booking(http, "race") for _ in range(6)))
    history = (await http.get("/bookings/race/history")).json()["items"]
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["created_at"] for a in answers}) == 1
    assert [e["action"] for e in history] == ["create"]
