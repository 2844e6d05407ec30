"""Idempotency-Key on the real `convergent serve`, including crashes at each fault point."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from convergent.drill import free_port
from convergent.store import Store
from tests.acceptance.conftest import Server, start_process, wait_until_healthy

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "sku-1", "qty": 2}],
    "amount": "20.00",
    "currency": "EUR",
}


def count_orders(server: Server, client: str) -> int:
    database_url, client = server.database_url, server.key_id(client)

    async def count() -> int:
        store = Store(database_url)
        try:
            async with store.read() as conn:
                query = sa.text(
                    "SELECT count(*) FROM shop_orders WHERE client = :c"
                )  # the key's id
                return int((await conn.execute(query, {"c": client})).scalar_one())
        finally:
            await store.close()

    return asyncio.run(count())


def post_until_not_in_progress(server: Server, key: str, client: str) -> httpx.Response:
    """Retry as a client would while the key's lock is held (poll with a deadline)."""
    deadline = time.monotonic() + 20
    with server.client(client) as http:
        while True:
            response = http.post("/orders", json=ORDER, headers={"Idempotency-Key": key})
            if response.status_code != 409 or time.monotonic() > deadline:
                return response
            time.sleep(0.1)


def test_a_retried_order_is_created_once_and_replayed(server: Server) -> None:
    with server.client("acc-1") as http:
        first = http.post("/orders", json=ORDER, headers={"Idempotency-Key": '"order-1"'})
        again = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_orders(server, "acc-1") == 1


@pytest.fixture
def launch_pair(
    database_url: str, tmp_path: Path
) -> Iterator[Callable[[dict[str, str], dict[str, str]], tuple[Server, Server]]]:
    """Start two `convergent serve` processes on one database together (half the wait)."""
    started: list[Server] = []

    def launch(first_env: dict[str, str], second_env: dict[str, str]) -> tuple[Server, Server]:
        for env in (first_env, second_env):
            port = free_port()
            log = tmp_path / f"serve-{port}.log"
            process = start_process(["serve", "--port", str(port)], database_url, log, env)
            started.append(Server(f"http://127.0.0.1:{port}", database_url, process, log))
        for server in started:
            wait_until_healthy(server, timeout=120)  # start-up is slow when the machine is busy
        started[1].keys = started[0].keys  # one database: one set of keys
        return started[0], started[1]

    yield launch
    for server in started:
        server.stop()


@pytest.mark.parametrize(
    ("point", "replayed"),
    [
        ("idempotency.after_lock_before_handler", False),
        ("idempotency.after_handler_before_commit", False),
        ("idempotency.after_commit_before_response", True),
    ],
)
def test_a_crash_leaves_either_effect_and_response_or_neither(
    launch_pair: Callable[[dict[str, str], dict[str, str]], tuple[Server, Server]],
    point: str,
    replayed: bool,
) -> None:
    # the default lock lease: a killed request's key is free again within seconds
    doomed, survivor = launch_pair({"CONVERGENT_FAULTS": point}, {})
    with (
        doomed.client("acc-3") as http,
        pytest.raises(httpx.TransportError),
    ):
        http.post("/orders", json=ORDER, headers={"Idempotency-Key": "crash-1"})
    assert doomed.process.wait(10) != 0
    killed = time.monotonic()
    assert count_orders(doomed, "acc-3") == (1 if replayed else 0)

    retry = post_until_not_in_progress(survivor, "crash-1", "acc-3")
    assert retry.status_code == 202
    assert time.monotonic() - killed < 10, "the retry waited too long for the dead lock"
    assert (retry.headers.get("Idempotent-Replayed") == "true") is replayed
    assert count_orders(survivor, "acc-3") == 1
