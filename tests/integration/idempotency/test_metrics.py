from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from tests.integration.idempotency.conftest import Harness

NAMES = ("executions", "replays", "conflicts", "mismatches")


def counts() -> dict[str, float]:
    return {n: REGISTRY.get_sample_value(f"convergent_idempotency_{n}_total") or 0.0 for n in NAMES}


async def test_each_outcome_is_counted_once(harness: Harness) -> None:
    before = counts()
    harness.gate = asyncio.Event()
    first = asyncio.create_task(harness.post({"n": 1}))
    await asyncio.wait_for(harness.entered.wait(), 10)
    assert (await harness.post({"n": 1})).status_code == 409
    harness.gate.set()
    await first
    harness.gate = None
    await harness.post({"n": 1})  # replay
    await harness.post({"n": 2})  # mismatch
    after = counts()
    assert {n: after[n] - before[n] for n in NAMES} == dict.fromkeys(NAMES, 1.0)
