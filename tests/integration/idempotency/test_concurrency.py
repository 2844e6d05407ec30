from __future__ import annotations

import asyncio

from tests.integration.idempotency.conftest import Harness


async def test_a_request_while_the_first_runs_is_a_409_with_retry_after(
    harness: Harness,
) -> None:
    harness.gate = asyncio.Event()
    first = asyncio.create_task(harness.post())
    await asyncio.wait_for(harness.entered.wait(), 10)
    second = await harness.post()
    harness.gate.set()
    assert (await first).status_code == 201
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["type"].endswith("/idempotency-key-in-progress")
    assert int(second.headers["Retry-After"]) >= 1
    assert harness.calls == 1


async def test_fifty_simultaneous_first_requests_execute_exactly_once(harness: Harness) -> None:
    responses = await asyncio.gather(*(harness.post() for _ in range(50)))
    statuses = [r.status_code for r in responses]
    assert harness.calls == 1
    assert await harness.rows() == 1
    assert set(statuses) <= {201, 409}
    replayed = [r for r in responses if r.status_code == 201]
    assert len({r.content for r in replayed}) == 1
