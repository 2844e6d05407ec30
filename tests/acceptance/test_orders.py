from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.acceptance.conftest import Server
from tests.acceptance.resources.harness import database_for, running_shop


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shop per database for the module: its tests use distinct ids, keys and clients."""
    tmp = tmp_path_factory.mktemp("orders")
    with running_shop(database_for(request, tmp), tmp) as shop:
        yield shop


ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "sku-1", "qty": 2}],
    "amount": "20.00",
    "currency": "EUR",
}


def test_an_accepted_order_can_be_read_back_with_its_etag(server: Server) -> None:
    with server.client("client-a") as http:
        created = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-1"})
        assert created.status_code == 202
        location = created.headers["Location"]
        assert created.json()["state"] == "pending"
        read = http.get(location)
        assert read.status_code == 200
        assert read.headers["ETag"] == f'"{read.json()["version"]}"'


def test_an_invalid_order_is_a_problem_naming_the_field(server: Server) -> None:
    with server.client("client-a") as http:
        bad = http.post(
            "/orders", json={**ORDER, "currency": "euro"}, headers={"Idempotency-Key": "k-2"}
        )
    assert bad.status_code == 422
    assert bad.headers["Content-Type"] == "application/problem+json"
    assert [e["field"] for e in bad.json()["errors"]] == ["currency"]


def test_metrics_show_replays_runs_and_backlogs(server: Server) -> None:
    headers = {"Idempotency-Key": "m-1"}
    with server.client() as http:
        assert http.post("/orders", json=ORDER, headers=headers).status_code == 202
        assert http.post("/orders", json=ORDER, headers=headers).headers["Idempotent-Replayed"]
        deadline = time.monotonic() + 30
        while True:
            text = http.get("/metrics").text
            wanted = [
                "convergent_idempotency_replays_total 1.0",
                'convergent_runs{status="pending"}',
                "convergent_outbox_backlog",
                "convergent_outbox_oldest_age_seconds",
                "convergent_webhook_deliveries_pending",
            ]
            missing = [w for w in wanted if w not in text]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert missing == []
