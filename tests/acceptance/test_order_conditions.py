"""Order ETags, conditional cancel and history over HTTP against a real `convergent serve`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.conftest import Server
from tests.acceptance.resources.harness import database_for, running_shop

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "sku-1", "qty": 1}],
    "amount": "9.00",
    "currency": "EUR",
}
_keys = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shop per database for this module's tests, without its background loops: no saga
    moves an order, so the orders these tests cancel are still pending (the saga would otherwise
    finish one between a read and a cancel)."""
    tmp = tmp_path_factory.mktemp("orders")
    with running_shop(database_for(request, tmp), tmp, args=("--no-loops",)) as shop:
        yield shop


def place_order(http: httpx.Client) -> httpx.Response:
    answer = http.post("/orders", json=ORDER, headers={"Idempotency-Key": f"oc-{next(_keys)}"})
    assert answer.status_code == 202
    return answer


def test_cancel_with_the_current_etag_cancels_and_changes_the_etag(server: Server) -> None:
    with server.client("client-a") as http:
        location = place_order(http).headers["Location"]
        etag = http.get(location).headers["ETag"]
        cancelled = http.post(f"{location}/cancel", headers={"If-Match": etag})
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.headers["ETag"] != etag


def test_cancel_is_refused_without_or_with_a_stale_etag(server: Server) -> None:
    with server.client("client-a") as http:
        location = place_order(http).headers["Location"]
        missing = http.post(f"{location}/cancel")
        stale = http.post(f"{location}/cancel", headers={"If-Match": '"99"'})
    assert (missing.status_code, stale.status_code) == (428, 412)
    assert missing.headers["Content-Type"] == "application/problem+json"


def test_cancel_in_a_state_that_forbids_it_is_409_and_history_shows_why(server: Server) -> None:
    with server.client("client-a") as http:
        location = place_order(http).headers["Location"]
        first = http.post(f"{location}/cancel", headers={"If-Match": '"1"'})
        second = http.post(f"{location}/cancel", headers={"If-Match": first.headers["ETag"]})
        history = http.get(f"{location}/history").json()["items"]
    assert second.status_code == 409
    assert [(e["from"], e["to"]) for e in history] == [(None, "pending"), ("pending", "cancelled")]
