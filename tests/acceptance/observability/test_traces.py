"""One order is one trace: the request in `serve`, its saga's steps in `worker`, the events'
publish in `relay`, their consumption back in `worker` and the run that consumer started,
exported over OTLP/HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.store import Store
from convergent.store.schema import run_steps, runs
from tests.acceptance.observability.otlp import ReceivedSpan, Receiver
from tests.acceptance.observability.system import Shop, eventually, stock_up

ORDER = {
    "customer_id": "c1",
    "items": [{"sku": "sku-1", "qty": 1}],
    "amount": "10.00",
    "currency": "EUR",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


async def _steps_of(database_url: str) -> set[str]:
    store = Store(database_url)
    try:
        async with store.read() as conn:
            run_id = (
                (
                    await conn.execute(
                        sa.select(runs.c.id).where(
                            runs.c.workflow == "shop.order", runs.c.args.is_not(None)
                        )
                    )
                )
                .scalars()
                .all()
            )
            names = await conn.execute(
                sa.select(run_steps.c.name).where(
                    run_steps.c.run_id.in_(run_id), run_steps.c.kind == "step"
                )
            )
            return set(names.scalars())
    finally:
        await store.close()


def test_one_order_is_one_trace_across_serve_worker_and_relay(
    sqlite_url: str, tmp_path: Path, receiver: Receiver
) -> None:
    shop = Shop(
        sqlite_url,
        tmp_path,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    try:
        shop.psp()
        server = shop.serve()
        stock_up(sqlite_url)
        shop.start(
            "worker",
            [
                "worker",
                "--import",
                "convergent_shop.background",
                "--import",
                "tests.integration.observability.app",
                "--no-relay",
                "--poll-interval",
                "0.2",
            ],
        )
        shop.start("relay", ["relay", "--import", "tests.integration.observability.app"])
        with server.client("client-t") as http:
            created = http.post("/orders", json=ORDER, headers={"Idempotency-Key": "t-1"})
            assert created.status_code == 202, created.text
            location = created.headers["Location"]
            eventually(
                lambda: (
                    http.get(location).json()["state"]
                    in {"completed", "confirmed", "failed", "cancelled"}
                ),
                timeout=60,
                what="the order to settle",
            )
            assert http.get(location).json()["state"] != "failed"

        def accepted() -> list[ReceivedSpan]:  # the POST that was answered 202
            return [
                s
                for s in receiver.snapshot()
                if s.service == "convergent-serve"
                and s.name == "POST /orders"
                and s.attributes.get("http.response.status_code") == 202
            ]

        eventually(lambda: bool(accepted()), what="the request span")
        (request,) = accepted()  # one server span per request, whoever makes it
        steps = asyncio.run(_steps_of(sqlite_url))
        assert {"reserve_stock", "authorize_payment", "create_shipment"} <= steps

        def trace() -> list[ReceivedSpan]:
            return [s for s in receiver.snapshot() if s.trace_id == request.trace_id]

        def missing() -> set[tuple[str, str]]:
            wanted = {("convergent-worker", f"step {n}") for n in steps} | {
                ("convergent-relay", "publish shop.orders"),
                ("convergent-worker", "process shop.orders"),
                # a run the consumer started continues the trace
                ("convergent-worker", "workflow obs.followup"),
                ("convergent-worker", "step note"),
            }
            return wanted - {(s.service, s.name) for s in trace()}

        deadline = time.monotonic() + 60
        while missing():
            assert time.monotonic() < deadline, (
                f"spans missing from the trace: {missing()}; received: "
                f"{sorted({(s.service, s.name, s.trace_id[:8]) for s in receiver.snapshot()})}"
            )
            time.sleep(0.2)
        spans = trace()
        assert {s.service for s in spans} >= {
            "convergent-serve",
            "convergent-worker",
            "convergent-relay",
        }
        assert request.attributes["http.request.method"] == "POST"
        assert request.attributes["http.response.status_code"] == 202
        publish = next(s for s in spans if s.name == "publish shop.orders")
        assert publish.attributes["messaging.destination.name"] == "shop.orders"
        process = next(s for s in spans if s.name == "process shop.orders")
        assert process.attributes["messaging.consumer.group.name"] == "obs-orders"

        def connected() -> bool:  # every span hangs off the request (once all are exported)
            spans = trace()
            ids = {s.span_id for s in spans}
            return all(s.parent_id in ids for s in spans if s.parent_id)

        eventually(connected, timeout=15, what="every span's parent")
        spans = trace()
        print(sorted({(s.service, s.name) for s in spans}))
    finally:
        shop.stop()
