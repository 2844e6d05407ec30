"""Every booking change made over HTTP is called back, end to end, like an order's."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa

from convergent.store import Store
from convergent.webhooks import ALLOW_HOSTS_ENV
from convergent_shop.app import create_app
from convergent_shop.notifications import SECRETS_ENV, notifications
from convergent_shop.sim import checks
from convergent_shop.sim.checks import CheckContext, run_checks
from convergent_shop.sim.demo import subscribe_receiver
from convergent_shop.sim.servers import serve_app
from convergent_shop.sim.workload import Workload, WorkloadConfig
from tests.shop_keys import client_key

BODY = {"restaurant": "r", "time": "2031-05-04T19:00:00+00:00", "party_size": 2, "name": "Ada"}


async def booking_callbacks(store: Store, code: str) -> list[tuple[str, int]]:
    async with store.read() as conn:
        rows = await conn.execute(sa.select(notifications.c.event_type, notifications.c.data))
    return sorted(
        (t, d["version"]) for t, d in rows if t.startswith("booking.") and d["id"] == code
    )


async def test_patched_cancelled_and_submitted_bookings_reach_the_receiver(
    shop_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_HOSTS_ENV, "127.0.0.1")  # the sample receiver is on loopback
    monkeypatch.setenv(SECRETS_ENV, "")  # set by subscribe_receiver, restored afterwards
    monkeypatch.setattr(checks, "CALLBACK_PATIENCE", 30.0)
    async with serve_app(create_app(shop_store)) as url:
        await subscribe_receiver(shop_store, f"{url}/notifications/webhook")
        config = WorkloadConfig(
            orders=0,
            bookings=4,
            customers=0,
            booking_change_rate=1.0,
            run_id="t",
            seed=1,
            api_key=await client_key(shop_store, "sim"),
        )
        workload = Workload(url, config)
        await workload.run(asyncio.Event())
        async with httpx.AsyncClient(base_url=url, headers={"X-Api-Key": config.api_key}) as http:
            made = await http.put("/bookings/to-cancel", json=BODY)
            gone = await http.delete(
                "/bookings/to-cancel", headers={"If-Match": made.headers["ETag"]}
            )
            assert gone.status_code == 200
            again = await http.delete("/bookings/to-cancel")  # a repeat announces nothing
            assert again.json()["version"] == gone.json()["version"]
            draft = await http.post("/bookings", json=BODY)
            submitted = await http.put(f"/bookings/{draft.json()['code']}/confirm")
            assert submitted.status_code in (200, 202)
        # one of the four is too large and fails; the other three were moved once confirmed
        assert workload.stats.booking_changes == 3
        (result,) = await run_checks(CheckContext(shop_store), [_called_back()])
    assert result.status == "pass", result.detail
    assert result.data["bookings"] == 6
    moved = await booking_callbacks(shop_store, "bk-t-1")
    assert moved == [("booking.pending", 1), ("booking.ready", 2), ("booking.ready", 3)]
    cancelled = await booking_callbacks(shop_store, "to-cancel")
    assert ("booking.cancelled", gone.json()["version"]) in cancelled
    assert [t for t, _ in cancelled].count("booking.cancelled") == 1
    code = draft.json()["code"]
    assert [t for t, _ in await booking_callbacks(shop_store, code)] == [
        "booking.draft",
        "booking.pending",
        "booking.ready",
    ]


def _called_back() -> checks.Check:
    return next(c for c in checks.CHECKS if c.name == "final_states_called_back")
