"""The orders service's local read model of customers, fed by the ``customers`` entity topic.

``messaging_loops`` runs the relay and this consumer inside the app's lifespan (the embedded demo
runs everything in one process). Set ``CONVERGENT_SHOP_LOOPS=0`` when separate processes run them
instead: ``convergent relay`` and ``convergent consume --import convergent.shop.readmodels``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import NotFound
from convergent.messages import Message
from convergent.outbox import Consumer, Relay, apply_entity, consumer
from convergent.shop.customers import customers_topic
from convergent.shop.db import metadata
from convergent.store import Store
from convergent.transports import transport_from_url

__all__ = ["CUSTOMER_VIEW_GROUP", "customer_view", "messaging_loops", "router"]

CUSTOMER_VIEW_GROUP = "orders.customer-view"

customer_view = sa.Table(
    "shop_customer_view",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
)


@consumer(customers_topic, CUSTOMER_VIEW_GROUP)  # `convergent consume --import` runs it too
async def apply_customer(conn: AsyncConnection, message: Message) -> None:
    """Upsert the latest state; a tombstone deletes the row."""
    await apply_entity(conn, customer_view, message)


@contextlib.asynccontextmanager
async def messaging_loops(store: Store, broker_url: str | None) -> AsyncIterator[None]:
    """Run the relay and the customer-view consumer until the app stops (unless disabled)."""
    if os.environ.get("CONVERGENT_SHOP_LOOPS", "1") == "0":
        yield
        return
    transport = transport_from_url(broker_url, store)
    stop = asyncio.Event()
    relay = Relay(store, transport, poll_interval=0.5)
    consumer = Consumer(store, transport, customers_topic, CUSTOMER_VIEW_GROUP, apply_customer)
    tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await transport.close()


router = APIRouter(tags=["orders"])


@router.get("/views/customers/{customer_id}")
async def get_customer_view(customer_id: str, request: Request) -> dict[str, Any]:
    """The orders service's copy of a customer (eventually consistent with /customers)."""
    store: Store = request.app.state.store
    async with store.read() as conn:
        row = (
            await conn.execute(sa.select(customer_view).where(customer_view.c.id == customer_id))
        ).one_or_none()
    if row is None:
        raise NotFound(f"no customer {customer_id} in the orders service's view")
    return {"id": row.id, "name": row.name, "email": row.email, "version": row.version}
