from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from convergent.store import Store
from convergent.webhooks import enqueue
from tests.acceptance.conftest import Server

LOCAL = {"CONVERGENT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}


def test_an_endpoint_shows_its_secret_once_and_can_be_managed(server: Server) -> None:
    with server.client() as http:
        created = http.post(
            "/webhooks/endpoints",
            json={"url": "https://93.184.216.34/hook", "event_types": ["order.*"]},
        )
        assert created.status_code == 201
        body = created.json()
        assert body["secret"].startswith("whsec_")
        location = created.headers["Location"]
        read = http.get(location).json()
        assert "secret" not in read
        assert read["event_types"] == ["order.*"]
        assert http.patch(location, json={"enabled": False}).json()["enabled"] is False
        operator = {"X-Api-Key": server.key("ops", admin=True)}  # an operator's route
        rotated = http.post(location + "/rotate-secret", headers=operator).json()
        assert rotated["secret"] not in (body["secret"], None)
        assert http.delete(location).status_code == 204
        assert http.get(location).status_code == 404


def test_a_committed_event_reaches_a_subscribed_receiver_through_the_served_dispatcher(
    start_server: Callable[..., Server],
) -> None:
    first = start_server(env=LOCAL)
    with first.client() as http:
        created = http.post("/webhooks/endpoints", json={"url": "http://127.0.0.1:9/none"}).json()
    first.stop()
    shop = start_server(env={**LOCAL, "CONVERGENT_NOTIFICATIONS_SECRETS": created["secret"]})
    with shop.client() as http:
        own = shop.base_url + "/notifications/webhook"
        assert http.patch(f"/webhooks/endpoints/{created['id']}", json={"url": own}).is_success
        message_id = asyncio.run(_enqueue(shop.database_url))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            received = http.get("/notifications").json()
            if received:
                break
            time.sleep(0.1)
        assert [n["id"] for n in received] == [message_id]
        resend = f"/webhooks/endpoints/{created['id']}/messages/{message_id}/resend"
        assert http.post(resend).status_code == 202
        attempts_url = f"/webhooks/endpoints/{created['id']}/attempts"
        while time.monotonic() < deadline and len(http.get(attempts_url).json()) < 2:
            time.sleep(0.1)
        attempts = http.get(attempts_url).json()
        received_again = http.get("/notifications").json()
    assert [a["outcome"] for a in attempts] == ["succeeded", "succeeded"]
    assert received_again == received  # the redelivery was recognised and had no effect


async def _enqueue(database_url: str) -> str:
    async with Store(database_url) as store, store.begin() as conn:
        return str(await enqueue(conn, "order.paid", {"id": "o-1"}))
