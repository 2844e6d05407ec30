from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from convergent.clock import ManualClock
from convergent.store import Store
from convergent.webhooks import AllowList, Dispatcher, WebhookSettings, create_endpoint
from tests.integration.webhooks.receiver import Receiver

LOCAL = AllowList.parse(["127.0.0.1"])


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def wstore(database_url: str, clock: ManualClock) -> AsyncIterator[Store]:
    """A store on the test database whose time moves only by hand."""
    s = Store(database_url, clock=clock)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    try:
        yield r
    finally:
        await r.stop()


def settings(**overrides: object) -> WebhookSettings:
    base: dict[str, object] = {"jitter": 0.0, "timeout": 2.0, "allow": LOCAL, "poll_interval": 0.05}
    base.update(overrides)
    return WebhookSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def dispatcher(wstore: Store) -> Dispatcher:
    return Dispatcher(wstore, settings())


AddEndpoint = Callable[..., Awaitable[tuple[uuid.UUID, str]]]


@pytest.fixture
def add_endpoint(wstore: Store) -> AddEndpoint:
    """Register an endpoint; returns (id, secret)."""

    async def add(url: str, event_types: list[str] | None = None) -> tuple[uuid.UUID, str]:
        async with wstore.begin() as conn:
            endpoint, secret = await create_endpoint(
                conn, url, event_types=event_types, allow=LOCAL
            )
        return endpoint.id, secret

    return add
