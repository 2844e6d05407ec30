"""Workflow test fixtures: a store on a manual clock, the effects table, a loopback provider."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from convergent.clock import ManualClock
from convergent.retry import zero_delays
from convergent.store import Store
from convergent.workflows import Worker
from tests.integration.workflows import flows
from tests.integration.workflows.provider import Provider


@pytest.fixture
def provider() -> Iterator[Provider]:
    with Provider() as p:
        yield p


@pytest.fixture
async def effects_db(
    database_url: str, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """The test database with the steps' ``wf_effects`` table; the flows module points at it."""
    monkeypatch.setenv("WF_TEST_DATABASE_URL", database_url)
    monkeypatch.setenv("WF_TEST_PROVIDER_URL", provider.url)
    async with Store(database_url) as s, s.begin() as conn:
        await conn.run_sync(flows.user_metadata.create_all)
    yield database_url
    for cached in flows._stores.values():
        await cached.close()
    flows._stores.clear()


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def mstore(database_url: str, clock: ManualClock) -> AsyncIterator[Store]:
    """A store whose time only moves when the test advances ``clock``."""
    async with Store(database_url, clock=clock) as s:
        yield s


@contextlib.asynccontextmanager
async def running(store: Store, **options: Any) -> AsyncIterator[Worker]:
    """A worker running in the background for the block; stopped (leases released) after."""
    options.setdefault("poll_interval", 0.05)
    worker = Worker(store, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll an async predicate until true, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
def no_backoff() -> Iterator[None]:
    with zero_delays():
        yield
