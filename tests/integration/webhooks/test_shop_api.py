"""The shop's webhook API, in process (the served app is covered by tests/acceptance)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from convergent.store import Store
from convergent.webhooks import Dispatcher, enqueue
from convergent_shop.app import create_app
from convergent_shop.db import create_shop_tables
from tests.integration.webhooks.conftest import settings
from tests.integration.webhooks.receiver import Receiver, Reply
from tests.shop_keys import client_key


@pytest.fixture
async def http(wstore: Store, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("CONVERGENT_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    async with wstore.begin() as conn:
        await create_shop_tables(conn)  # shop_owners: who made each endpoint
    app = create_app(wstore, migrate=False)
    transport = httpx.ASGITransport(app=app)
    key = await client_key(wstore, "ops", admin=True)  # rotate-secret is an operator's route
    async with httpx.AsyncClient(
        transport=transport, base_url="http://shop", headers={"X-Api-Key": key}
    ) as client:
        yield client


async def test_a_private_destination_is_refused_at_registration(http: httpx.AsyncClient) -> None:
    refused = await http.post("/webhooks/endpoints", json={"url": "http://169.254.169.254/x"})
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/unsafe-destination")


async def test_an_unknown_endpoint_is_a_404_problem(http: httpx.AsyncClient) -> None:
    missing = await http.get("/webhooks/endpoints/not-a-uuid/attempts")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_recover_over_http_queues_the_failed_messages(
    http: httpx.AsyncClient, wstore: Store, receiver: Receiver
) -> None:
    created = (await http.post("/webhooks/endpoints", json={"url": receiver.url})).json()
    receiver.queue(Reply(500))
    async with wstore.begin() as conn:
        message_id = await enqueue(conn, "order.paid", {"id": "o-1"})
    await Dispatcher(wstore, settings(schedule=(0,))).drain()
    since = "2000-01-01T00:00:00Z"
    recovered = await http.post(
        f"/webhooks/endpoints/{created['id']}/recover", json={"since": since}
    )
    assert recovered.json() == {"queued": 1}
    await Dispatcher(wstore, settings()).drain()
    attempts = (await http.get(f"/webhooks/endpoints/{created['id']}/attempts")).json()
    assert [(a["message_id"], a["outcome"]) for a in attempts] == [
        (str(message_id), "succeeded"),
        (str(message_id), "failed"),
    ]
