"""The saga's undo of a payment asks the provider first: a capture whose answer was lost is
refunded, not voided (the provider would refuse the void and the undo would be dead-lettered)."""

from __future__ import annotations

import uuid

import pytest

from convergent.ids import uuid7
from convergent.store import Store
from convergent.workflows import StepContext
from convergent_shop import payments
from convergent_shop.orders import orders
from convergent_shop.workflows import PSP_URL_ENV, void_payment
from tests.integration.shopsim.conftest import Psp


async def test_a_capture_with_a_lost_answer_is_refunded_by_the_undo(
    shop_store: Store, psp: Psp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PSP_URL_ENV, psp.url)
    store, order_id, now = shop_store, uuid7(), shop_store.clock.now()
    async with store.begin() as conn:
        await conn.execute(
            orders.insert().values(
                id=order_id,
                client="c",
                customer_id="c1",
                items=[],
                amount=12,
                currency="EUR",
                state="authorized",
                version=3,
                created_at=now,
                updated_at=now,
            )
        )
        row = await payments.open_authorization(conn, str(order_id), "12.00", "EUR", "k-1", now)
    made = await psp.client.authorize("k-1", amount="12.00", currency="EUR", reference="o")
    async with store.begin() as conn:
        await payments.adopt(conn, str(order_id), made, now)
    await psp.client.capture(made["id"], "k-capture")  # the shop never heard back

    ctx = StepContext(uuid.uuid4(), "void_payment", 5, 1, "k-undo", store)
    undone = await void_payment.fn(ctx, str(order_id))

    assert row.status == "pending"
    assert undone["status"] == "refunded"
    found = await psp.client.lookup("k-1")
    assert found is not None
    assert found["status"] == "refunded"
