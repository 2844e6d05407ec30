"""A database that stalls (a proxy stops forwarding, nothing is reset): 503 fast, then recovery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.acceptance.conftest import Server, free_port, start_process, wait_until_healthy
from tests.acceptance.stall_proxy import StallProxy

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "A", "qty": 1}],
    "amount": "1.00",
    "currency": "EUR",
}


@pytest.fixture
def proxied(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, StallProxy]]:
    url = make_url(pg_url)
    with StallProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        port = free_port()
        log = tmp_path / "serve.log"
        process = start_process(["serve", "--port", str(port)], through, log)
        server = Server(f"http://127.0.0.1:{port}", pg_url, process, log)  # keys: directly
        try:
            wait_until_healthy(server, timeout=60)
            yield server, proxy
        finally:
            proxy.resume()
            server.stop()


def test_a_stalled_database_answers_503_within_5_s_and_recovers(
    proxied: tuple[Server, StallProxy],
) -> None:
    server, proxy = proxied
    with server.client("stall") as http:
        placed = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "before"})
        assert placed.status_code == 202, placed.text
        order = placed.headers["Location"]
        proxy.stall()
        for method, path, key in (("GET", order, None), ("POST", "/orders", "during")):
            started = time.monotonic()
            headers = {"Idempotency-Key": key} if key else {}
            answer = http.request(method, path, json=ORDER if key else None, headers=headers)
            took = time.monotonic() - started
            assert answer.status_code == 503, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            assert took < 5, f"{method} {path} took {took:.1f} s"
        proxy.resume()
        deadline = time.monotonic() + 30
        while True:  # the retry a client makes goes through once the database is back
            retry = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "during"})
            if retry.status_code == 202 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert retry.status_code == 202, retry.text
        assert http.get(order).status_code == 200
