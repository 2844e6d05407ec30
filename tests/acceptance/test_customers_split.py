"""The shop with its relay and customer-view consumer in separate processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.acceptance.conftest import Server, start_process
from tests.acceptance.test_customers import eventually, view


def test_separate_relay_and_consumer_processes_feed_the_read_model(
    start_server: Callable[..., Server], database_url: str, tmp_path: Path
) -> None:
    server = start_server(env={"CONVERGENT_SHOP_LOOPS": "0"})
    workers = [
        start_process(["relay"], database_url, tmp_path / "relay.log"),
        start_process(
            ["consume", "--import", "convergent_shop.readmodels"],
            database_url,
            tmp_path / "consume.log",
        ),
    ]
    try:
        with server.client() as http:
            http.put("/customers/c9", json={"name": "Cy", "email": "cy@x.io"})
            eventually(lambda: view(http, "c9").status_code == 200, timeout=30)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            assert w.wait(20) == 0
