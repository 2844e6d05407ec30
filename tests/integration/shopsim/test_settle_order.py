"""A client's cancel that commits between two of the saga's steps makes the next step fail on
the order's state (before the worker sees the run's cancel request): the order still ends
cancelled, not failed."""

from __future__ import annotations

import uuid

from convergent.resources import HistoryEntry
from convergent.store import Store
from convergent.workflows import StepContext
from convergent_shop.orders import ORDERS
from convergent_shop.workflows import settle_order


async def _order_in(store: Store, moves: list[str]) -> uuid.UUID:
    now = store.clock.now()
    order_id = uuid.uuid4()
    values = {
        "id": order_id,
        "client": "c",
        "customer_id": "cust",
        "items": [{"sku": "apple", "qty": 1}],
        "amount": "9.99",
        "currency": "EUR",
        "created_at": now,
        "updated_at": now,
    }
    async with store.begin() as conn:
        await ORDERS.create(conn, values, actor="test")
        for action in moves:
            await ORDERS.transition(conn, order_id, action, actor="test")
    return order_id


def _context(store: Store) -> StepContext:
    run_id = uuid.uuid4()
    return StepContext(run_id, "settle_order", 9, 1, f"{run_id}:9", store)


async def _state(store: Store, order_id: uuid.UUID) -> str:
    async with store.read() as conn:
        row = await ORDERS.get(conn, order_id)
    assert row is not None
    return str(row.state)


async def test_a_failure_after_a_clients_cancel_settles_cancelled(shop_store: Store) -> None:
    order_id = await _order_in(shop_store, ["reserve", "cancel"])  # the client's cancel
    assert await settle_order.fn(_context(shop_store), str(order_id), "failed") == "cancelled"
    assert await _state(shop_store, order_id) == "cancelled"


async def test_a_failure_with_no_cancel_settles_failed(shop_store: Store) -> None:
    order_id = await _order_in(shop_store, ["reserve"])
    assert await settle_order.fn(_context(shop_store), str(order_id), "failed") == "failed"
    history = [e.action for e in await _history(shop_store, order_id)]
    assert history == ["create", "reserve", "compensate", "mark_failed"]


async def _history(store: Store, order_id: uuid.UUID) -> list[HistoryEntry]:
    async with store.read() as conn:
        return await ORDERS.history(conn, order_id)
