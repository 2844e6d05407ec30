"""Payments against the real fake provider: never charged twice, lost answers adopted."""

from __future__ import annotations

from typing import Any

import pytest

from convergent.errors import TransientError
from convergent.store import Store
from convergent_shop import payments
from tests.integration.shopsim.conftest import Psp


async def authorize(
    store: Store, psp: Psp, order_id: str = "o1", key: str = "pay-o1"
) -> dict[str, Any]:
    async with store.begin() as conn:
        return await payments.authorize(
            conn, psp.client, order_id, "12.50", "EUR", key, store.clock.now()
        )


async def test_authorizing_twice_charges_the_provider_once(shop_store: Store, psp: Psp) -> None:
    first = await authorize(shop_store, psp)
    again = await authorize(shop_store, psp)
    assert first["status"] == again["status"] == "authorized"
    assert (await psp.client.ledger())["payments"] == 1


async def test_a_lost_authorize_answer_is_adopted_from_the_provider(
    shop_store: Store, psp: Psp
) -> None:
    await psp.client.set_faults(lost_response_rate=1.0)
    result = await authorize(shop_store, psp)
    assert result["status"] == "authorized"
    assert result["psp_payment_id"] is not None
    assert (await psp.client.ledger())["payments"] == 1


async def test_a_failure_before_charging_is_transient_and_retry_charges_once(
    shop_store: Store, psp: Psp
) -> None:
    await psp.client.set_faults(error_before_rate=1.0)
    with pytest.raises(TransientError):
        await authorize(shop_store, psp)
    await psp.client.set_faults(error_before_rate=0.0)
    assert (await authorize(shop_store, psp))["status"] == "authorized"
    assert (await psp.client.ledger())["payments"] == 1


async def test_capturing_twice_captures_once(shop_store: Store, psp: Psp) -> None:
    await authorize(shop_store, psp)
    for _ in range(2):
        async with shop_store.begin() as conn:
            done = await payments.capture(conn, psp.client, "o1", "cap-o1", shop_store.clock.now())
        assert done["status"] == "captured"
    assert (await psp.client.ledger())["captured"] == {"count": 1, "amount": "12.50"}


async def test_a_void_before_authorize_makes_the_late_authorize_charge_nothing(
    shop_store: Store, psp: Psp
) -> None:
    async with shop_store.begin() as conn:
        await payments.void(conn, psp.client, "o1", "void-o1", shop_store.clock.now())
    late = await authorize(shop_store, psp)
    assert late["status"] == "voided"
    assert (await psp.client.ledger())["payments"] == 0


async def test_voiding_a_captured_payment_refunds_it(shop_store: Store, psp: Psp) -> None:
    await authorize(shop_store, psp)
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        await payments.capture(conn, psp.client, "o1", "cap-o1", now)
    async with shop_store.begin() as conn:
        undone = await payments.void(conn, psp.client, "o1", "void-o1", now)
    assert undone["status"] == "refunded"
    assert (await psp.client.ledger())["refunded"]["count"] == 1


async def test_reconcile_reports_what_the_provider_holds(shop_store: Store, psp: Psp) -> None:
    await authorize(shop_store, psp)
    made = await psp.client.lookup("pay-o1")
    assert made is not None
    await psp.client.capture(made["id"])
    async with shop_store.begin() as conn:
        seen = await payments.reconcile(conn, psp.client, "o1", "rec-o1", shop_store.clock.now())
    assert seen["status"] == "captured"


async def test_under_every_provider_fault_each_order_is_charged_exactly_once(
    sqlite_url: str, psp: Psp
) -> None:
    from convergent_shop.db import create_shop_tables

    store = Store(sqlite_url)
    async with store.begin() as conn:
        await create_shop_tables(conn)
    await psp.client.set_faults(
        lost_response_rate=0.2, error_before_rate=0.15, error_after_rate=0.15, seed=11
    )

    async def until_done(step: str, order_id: str) -> None:
        for _ in range(50):
            try:
                async with store.begin() as conn:
                    now = store.clock.now()
                    if step == "authorize":
                        key = f"pay-{order_id}"
                        client = psp.client
                        await payments.authorize(conn, client, order_id, "3.00", "EUR", key, now)
                    else:
                        await payments.capture(conn, psp.client, order_id, f"cap-{order_id}", now)
                return
            except TransientError:
                continue  # the saga retries the step with the same key
        raise AssertionError(f"{step} {order_id} never went through")

    try:
        for n in range(20):
            await until_done("authorize", f"o{n}")
            await until_done("capture", f"o{n}")
        ledger = await psp.client.ledger()
    finally:
        await store.close()
    assert ledger["captured"]["count"] == 20
    assert ledger["payments"] == 20
    assert ledger["double_charges"] == []
