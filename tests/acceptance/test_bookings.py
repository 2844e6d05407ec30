"""Bookings over HTTP against a real `convergent serve` (with its background confirmer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.acceptance.conftest import Server
from tests.acceptance.resources.harness import database_for, running_shop

FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0).isoformat()
BOOKING = {"restaurant": "Chez Nous", "time": FUTURE, "party_size": 4, "name": "Ada"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shop (with its confirmer) per database for this module's tests."""
    tmp = tmp_path_factory.mktemp("bookings")
    with running_shop(database_for(request, tmp), tmp) as shop:
        yield shop


def test_a_booking_is_confirmed_within_the_sla_and_answered_201(server: Server) -> None:
    with server.client("client-a") as http:
        created = http.put("/bookings/table-1", json=BOOKING)
        read = http.get("/bookings/table-1")
    assert created.status_code == 201
    assert created.json()["state"] == "ready"
    assert created.json()["actions"]["create"] == {"status": "succeeded"}
    assert read.headers["ETag"] == f'"{read.json()["version"]}"'


def test_a_booking_that_cannot_be_made_ends_failed_with_a_problem(server: Server) -> None:
    with server.client("client-a") as http:
        created = http.put("/bookings/big", json={**BOOKING, "party_size": 40})
    assert created.status_code == 201
    assert created.json()["state"] == "failed"
    assert created.json()["actions"]["create"]["status"] == "failed"
    assert created.json()["actions"]["create"]["problem"]["type"].endswith("booking-rejected")


def test_changing_a_booking_needs_its_current_etag(server: Server) -> None:
    with server.client("client-a") as http:
        etag = http.put("/bookings/t2", json=BOOKING).headers["ETag"]
        missing = http.patch("/bookings/t2", json={"name": "Grace"})
        changed = http.patch("/bookings/t2", json={"name": "Grace"}, headers={"If-Match": etag})
        stale = http.patch("/bookings/t2", json={"name": "Linus"}, headers={"If-Match": etag})
    assert (missing.status_code, changed.status_code, stale.status_code) == (428, 200, 412)
    assert stale.headers["Content-Type"] == "application/problem+json"
    assert changed.json()["name"] == "Grace"


def test_cancelling_keeps_the_booking_and_its_whole_history(server: Server) -> None:
    with server.client("client-a") as http:
        http.put("/bookings/t3", json=BOOKING)
        cancelled = http.delete("/bookings/t3")
        read = http.get("/bookings/t3")
        history = http.get("/bookings/t3/history").json()["items"]
    assert cancelled.status_code == 200
    assert read.json()["state"] == "cancelled"
    assert [(e["action"], e["to"]) for e in history] == [
        ("create", "pending"),
        ("confirm", "ready"),
        ("cancel", "cancelled"),
    ]


def test_an_answer_not_final_in_time_is_202_and_polling_its_location_finds_the_outcome(
    server: Server,
) -> None:
    with server.client("client-a") as http:
        answer = http.put("/bookings/slow", json=BOOKING, headers={"Prefer": "wait=0"})
        deadline = time.monotonic() + 20
        polled = http.get(answer.headers["Location"])
        while polled.json()["actions"]["create"]["status"] == "pending":
            assert time.monotonic() < deadline, "the booking never settled"
            time.sleep(float(answer.headers["Retry-After"]) / 10)
            polled = http.get(answer.headers["Location"])
    assert answer.status_code == 202
    assert answer.json()["actions"]["create"] == {"status": "pending"}
    assert answer.headers["Preference-Applied"] == "wait=0"
    assert polled.json()["state"] == "ready"
