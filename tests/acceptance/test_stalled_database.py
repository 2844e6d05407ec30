"""A database that stalls (a proxy stops forwarding, nothing is reset): 503 fast, then recovery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from convergent.drill import free_port
from tests.acceptance.conftest import Server, start_process, wait_until_healthy
from tests.acceptance.observability.system import stock_up
from tests.acceptance.stall_proxy import StallProxy

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "A", "qty": 1}],
    "amount": "1.00",
    "currency": "EUR",
}


@pytest.fixture
def psp_url(tmp_path: Path) -> Iterator[str]:
    """The fake payment provider as its own process, so the sagas can converge."""
    port = free_port()
    db = f"sqlite+aiosqlite:///{tmp_path / 'psp.db'}"
    process = start_process(
        ["psp", "--port", str(port), "--database-url", db], db, tmp_path / "psp.log"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "psp.log").read_text()
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture
def proxied(pg_url: str, psp_url: str, tmp_path: Path) -> Iterator[tuple[Server, StallProxy]]:
    url = make_url(pg_url)
    with StallProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        port = free_port()
        log = tmp_path / "serve.log"
        env = {"CONVERGENT_PSP_URL": psp_url}
        process = start_process(["serve", "--port", str(port)], through, log, env)
        server = Server(f"http://127.0.0.1:{port}", pg_url, process, log)  # keys: directly
        server.psp_url = psp_url  # type: ignore[attr-defined]
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
    stock_up(server.database_url, "A", 10)
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
        # every order converges after the stall, and none is charged twice
        orders = [order, retry.headers["Location"]]
        deadline = time.monotonic() + 90
        states: list[str] = []
        while time.monotonic() < deadline:
            states = [http.get(o).json()["state"] for o in orders]
            if all(s in ("completed", "cancelled", "failed") for s in states):
                break
            time.sleep(0.5)
        assert states == ["completed", "completed"], server.log.read_text()[-3000:]
    ledger = httpx.get(f"{server.psp_url}/ledger", timeout=10).json()  # type: ignore[attr-defined]
    assert ledger["double_charges"] == []
    assert sorted(ledger["captured_per_reference"].values()) == [1, 1]
