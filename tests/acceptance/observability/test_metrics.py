"""Every process serves its metrics: after a small workload the series are there, with values
that make sense (the backlog rises and falls, a dead letter raises the gauge)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.outbox import emit
from convergent.store import Store
from tests.acceptance.observability.system import Shop, eventually, scrape, stock_up, value
from tests.integration.observability.app import PINGS

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "sku-1", "qty": 1}],
    "amount": "10.00",
    "currency": "EUR",
}


@pytest.fixture
def shop(sqlite_url: str, tmp_path: Path) -> Iterator[Shop]:
    system = Shop(sqlite_url, tmp_path)
    try:
        yield system
    finally:
        system.stop()


async def _poison(database_url: str) -> None:
    store = Store(database_url)
    try:
        async with store.begin() as conn:
            await emit(conn, PINGS, "p-1", "ping", {"poison": True})
            await emit(conn, PINGS, "p-2", "ping", {"poison": False})
    finally:
        await store.close()


def test_worker_relay_consume_and_serve_serve_their_metrics(shop: Shop) -> None:
    shop.psp()
    server = shop.serve()  # creates the shop's tables
    stock_up(shop.database_url)
    shop.start(
        "worker",
        [
            "worker",
            "--import",
            "convergent_shop.background",
            "--no-relay",
            "--no-consumers",
            "--poll-interval",
            "0.2",
        ],
    )
    shop.start(
        "consume",
        [
            "consume",
            "--import",
            "convergent_shop.readmodels",
            "--import",
            "tests.integration.observability.app",
        ],
    )
    with server.client("client-m") as http:
        for _ in range(2):  # the second is a replay
            created = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "m-1"})
            assert created.status_code == 202, created.text

    def worker_page() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return scrape(shop.metrics["worker"])

    # no relay yet: the outbox fills (sampled by the worker)
    eventually(lambda: value(worker_page(), "convergent_outbox_backlog") > 0, what="a backlog")
    eventually(
        lambda: value(worker_page(), "convergent_step_seconds_count", outcome="completed") > 0,
        what="step latencies",
    )
    page = worker_page()
    assert value(page, "convergent_workflow_runs", workflow="shop.order") >= 1
    assert value(page, "convergent_outbox_oldest_age_seconds") > 0

    shop.start("relay", ["relay"])
    eventually(
        lambda: value(scrape(shop.metrics["relay"]), "convergent_outbox_published_total") > 0,
        what="published messages",
    )
    eventually(
        lambda: (
            value(scrape(shop.metrics["relay"]), "convergent_outbox_backlog") == 0
            and ("convergent_outbox_backlog", frozenset()) not in scrape(shop.metrics["relay"])
        ),
        what="the backlog to drain",
    )
    eventually(lambda: value(worker_page(), "convergent_outbox_backlog") == 0, what="drained")

    asyncio.run(_poison(shop.database_url))

    def consume() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return scrape(shop.metrics["consume"])

    eventually(
        lambda: value(consume(), "convergent_dead_letters", source="consumer") == 1,
        what="the dead letter gauge",
    )
    page = consume()
    assert value(page, "convergent_retries_total", source="consumer") >= 1
    assert value(page, "convergent_dead_lettered_total", source="consumer") == 1
    assert value(page, "convergent_consumer_messages_total", outcome="handled") >= 1
    assert value(page, "convergent_time_to_consistency_seconds_count") >= 1
    assert (
        "convergent_consumer_lag_seconds",
        frozenset({("group", "obs-test"), ("topic", "obs-pings")}),
    ) in page

    served = scrape(shop.metrics["serve"])
    assert value(served, "convergent_idempotency_requests_total", outcome="new") == 1
    assert value(served, "convergent_idempotency_requests_total", outcome="replay") == 1
