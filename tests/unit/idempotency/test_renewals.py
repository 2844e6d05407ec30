"""The middleware keeps running requests' locks with one timer per event loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from starlette.types import Receive, Scope, Send

from convergent.http.middleware import IdempotencyMiddleware, _Renewals, header_principal
from convergent.idempotency.engine import Lease
from convergent.store import Store


async def _app(scope: Scope, receive: Receive, send: Send) -> None:  # never called
    raise AssertionError


def test_each_event_loop_has_its_own_renewals_and_a_closed_loops_go(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    middleware = IdempotencyMiddleware(
        _app, store=store, routes=[], principal=header_principal("X-Api-Key")
    )
    lease = Lease("scope", "key", datetime.now(UTC))

    async def hold() -> _Renewals:
        renewals = middleware._renewals()
        assert middleware._renewals() is renewals
        held = renewals.hold(lease)
        assert renewals.timer is not None
        assert list(renewals.running) == [held]
        await renewals.release(held)
        assert not renewals.running
        return renewals

    first = asyncio.run(hold())
    second = asyncio.run(hold())
    assert second is not first
    assert second.loop is not first.loop
    assert list(middleware.renewals.values()) == [second]  # the first loop closed: dropped
    asyncio.run(store.close())
