"""Each forward step of the order saga may run again after its effect committed (its worker died
before the checkpoint): the replay must answer the same outcome, not fail the order."""

from __future__ import annotations

import uuid

import pytest

from convergent.ids import uuid7
from convergent.store import Store
from convergent.workflows import StepContext
from convergent_shop import payments
from convergent_shop.orders import orders
from convergent_shop.workflows import (
    PSP_URL_ENV,
    authorize_payment,
    complete_order,
    create_shipment,
    reserve_stock,
)
from tests.integration.shopsim.conftest import Psp
from tests.integration.shopsim.test_services import seed, stock_of


async def test_every_forward_step_replayed_after_its_effect_answers_the_same(
    shop_store: Store, psp: Psp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PSP_URL_ENV, psp.url)
    store, order_id, now = shop_store, uuid7(), shop_store.clock.now()
    await seed(store, apple=10)
    async with store.begin() as conn:
        await conn.execute(
            orders.insert().values(
                id=order_id,
                client="c",
                customer_id="c1",
                items=[{"sku": "apple", "qty": 2}],
                amount=12,
                currency="EUR",
                state="pending",
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
    run_id = uuid.uuid4()
    for seq, step in enumerate(
        (reserve_stock, authorize_payment, create_shipment, complete_order), start=1
    ):
        ctx = StepContext(run_id, step.name, seq, 1, f"{run_id}:{seq}:{step.name}", store)
        first = await step.fn(ctx, str(order_id))
        replayed = await step.fn(ctx, str(order_id))  # same key: its checkpoint was lost
        assert replayed == first, step.name

    async with store.read() as conn:
        state = (await conn.execute(orders.select().where(orders.c.id == order_id))).one().state
        payment = await payments.payment_row(conn, str(order_id))
    assert state == "completed"
    assert payment.status == "captured"
    assert await stock_of(store, "apple") == {"available": 8, "reserved": 0, "shipped": 2}
    ledger = await psp.client.ledger()
    assert ledger["double_charges"] == []
