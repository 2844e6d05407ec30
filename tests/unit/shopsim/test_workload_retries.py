"""The workload's clients: the same key on every retry, Retry-After honoured, missing routes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from convergent_shop.sim.workload import Workload, WorkloadConfig


def workload_against(
    handler: httpx.MockTransport, **config: Any
) -> tuple[Workload, httpx.AsyncClient]:
    workload = Workload("http://shop", WorkloadConfig(**config))
    return workload, httpx.AsyncClient(base_url="http://shop", transport=handler)


async def test_a_409_is_retried_with_the_same_key_after_retry_after() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Idempotency-Key"])
        if len(seen) < 3:
            return httpx.Response(409, headers={"Retry-After": "0"})
        return httpx.Response(202, json={"id": "o1"})

    workload, http = workload_against(httpx.MockTransport(answer))
    async with http:
        headers = {"Idempotency-Key": "k"}
        got = await workload.send(http, "POST", "/orders", "POST /orders", headers=headers)
    assert got is not None
    assert got.status_code == 202
    assert seen == ["k", "k", "k"]
    assert workload.stats.retries == 2


async def test_retry_after_is_waited_for_up_to_the_cap() -> None:
    workload = Workload("http://shop", WorkloadConfig(max_retry_after=0.5))
    assert workload._delay(1, httpx.Response(503, headers={"Retry-After": "30"})) == 0.5
    assert workload._delay(1, httpx.Response(503, headers={"Retry-After": "0.2"})) == 0.2


async def test_a_missing_route_counts_as_not_available() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, json={"detail": "Not Found"}))
    workload, http = workload_against(transport)
    async with http:
        got = await workload.send(http, "PUT", "/bookings/b1", "PUT /bookings/{code}")
    assert got is None
    assert workload.stats.not_available["PUT /bookings/{code}"] == 1
    assert workload.stats.retries == 0


async def test_a_double_submit_sends_the_same_key_twice_at_once() -> None:
    keys: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        return httpx.Response(202, json={"id": "o1"})

    workload, http = workload_against(
        httpx.MockTransport(answer), orders=1, double_submit_rate=1.0, cancel_rate=0.0
    )
    async with http:
        await workload._order(http, 0)
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert workload.stats.orders_by_key == {keys[0]: {"o1"}}


async def test_a_booking_waiting_for_its_answer_holds_back_no_order() -> None:
    orders_done = asyncio.Event()
    placed: list[str] = []

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/bookings"):
            await orders_done.wait()  # like a PUT waiting out the 5 s SLA
            return httpx.Response(202, json={"state": "pending"})
        placed.append(request.headers["Idempotency-Key"])
        if len(placed) == 3:
            orders_done.set()
        return httpx.Response(202, json={"id": f"o{len(placed)}"})

    config = WorkloadConfig(orders=3, bookings=2, customers=0, concurrency=1, seed=1)
    config.double_submit_rate = config.cancel_rate = 0.0
    workload = Workload("http://shop", config, transport=httpx.MockTransport(answer))
    await asyncio.wait_for(workload.run(asyncio.Event()), 10)
    assert workload.stats.accepted == 3
    assert workload.stats.bookings == 2


async def test_spread_orders_start_evenly_over_the_time_given() -> None:
    starts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        starts.append(time.monotonic())
        return httpx.Response(202, json={"id": f"o{len(starts)}"})

    config = WorkloadConfig(orders=5, bookings=0, customers=0, concurrency=5, spread=0.5)
    config.double_submit_rate = config.cancel_rate = 0.0
    workload = Workload("http://shop", config, transport=httpx.MockTransport(answer))
    await workload.run(asyncio.Event())
    assert len(starts) == 5
    assert starts[-1] - starts[0] >= 0.4  # the fifth start is due 4/5 of the way in
