"""Customers own an entity topic; the orders service's read model follows it, deletes included."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server
from tests.acceptance.resources.harness import database_for, running_shop


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shop per database for the module: its tests use distinct ids, keys and clients."""
    tmp = tmp_path_factory.mktemp("customers")
    with running_shop(database_for(request, tmp), tmp) as shop:
        yield shop


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "the read model did not converge"
        time.sleep(0.05)


def view(http: httpx.Client, customer_id: str) -> httpx.Response:
    return http.get(f"/views/customers/{customer_id}")


def test_a_put_customer_reaches_the_orders_read_model(server: Server) -> None:
    with server.client() as http:
        assert (
            http.put("/customers/c1", json={"name": "Ada", "email": "ada@x.io"}).status_code == 200
        )
        got = eventually(lambda: view(http, "c1").status_code == 200 and view(http, "c1").json())
        assert got == {"id": "c1", "name": "Ada", "email": "ada@x.io", "version": 1}
        http.put("/customers/c1", json={"name": "Ada L.", "email": "ada@x.io"})
        eventually(lambda: view(http, "c1").json().get("version") == 2)
        assert view(http, "c1").json()["name"] == "Ada L."


def test_a_deleted_customer_disappears_from_the_read_model(server: Server) -> None:
    with server.client() as http:
        http.put("/customers/c2", json={"name": "Bob", "email": "bob@x.io"})
        eventually(lambda: view(http, "c2").status_code == 200)
        assert http.delete("/customers/c2").status_code == 204
        eventually(lambda: view(http, "c2").status_code == 404)
        assert http.get("/customers/c2").status_code == 404


def test_an_invalid_customer_is_refused_and_emits_nothing(server: Server) -> None:
    with server.client() as http:
        bad = http.put("/customers/c3", json={"name": "", "email": "nope"})
        assert bad.status_code == 422
        assert bad.headers["Content-Type"] == "application/problem+json"
        assert view(http, "c3").status_code == 404
