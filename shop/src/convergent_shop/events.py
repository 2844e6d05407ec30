"""What the shop tells the world when a resource changes: one outbox event and one webhook.

Both are written in the transaction of the change itself, so a state that committed is always
announced and an announcement never describes a state that rolled back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.outbox import declare_topic, emit
from convergent.store import Store
from convergent.webhooks import enqueue

__all__ = ["ResourceChanged", "announce", "bookings_topic", "orders_topic"]


class ResourceChanged(BaseModel):
    """The payload of every state-change event: enough for a receiver to drop stale updates."""

    id: str
    state: str
    version: int


orders_topic = declare_topic("shop.orders", ResourceChanged)
bookings_topic = declare_topic("shop.bookings", ResourceChanged)
_TOPICS = {"order": orders_topic, "booking": bookings_topic}


async def announce(conn: AsyncConnection, store: Store, kind: str, row: Any, key: str) -> None:
    """Emit ``shop.<kind>.<state>`` for ``row`` (an order or a booking) and queue its webhook."""
    data = {"id": key, "state": row.state, "version": row.version}
    event_type = f"{kind}.{row.state}"
    await emit(conn, _TOPICS[kind], key, f"shop.{event_type}", data, now=store.clock.now())
    await enqueue(conn, event_type, data, store=store)
