"""Read models fed by the ``customers`` entity topic, each its own consumer group.

- the orders service's copy of each customer (``shop_customer_view``);
- billing's accounts (``shop_billing_accounts``): who to invoice, deleted with the customer;
- analytics (``shop_customer_analytics``): how often each profile changed, kept after deletion.

Each consumer applies a message and records it in the inbox in one transaction, so a group that
was down catches up from its committed offset with nothing lost and nothing applied twice. They
run in `convergent serve` (single process), in `convergent worker`, or alone with
``convergent consume --import convergent_shop.readmodels``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import NotFound
from convergent.messages import Message
from convergent.outbox import apply_entity, consumer
from convergent.store import Store
from convergent_shop.customers import customers_topic
from convergent_shop.db import metadata

__all__ = [
    "ANALYTICS_GROUP",
    "BILLING_GROUP",
    "CUSTOMER_VIEW_GROUP",
    "billing_accounts",
    "customer_analytics",
    "customer_view",
    "router",
]

CUSTOMER_VIEW_GROUP = "orders.customer-view"
BILLING_GROUP = "billing.accounts"
ANALYTICS_GROUP = "analytics.customers"

customer_view = sa.Table(
    "shop_customer_view",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
)


billing_accounts = sa.Table(
    "shop_billing_accounts",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
)

customer_analytics = sa.Table(
    "shop_customer_analytics",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("changes", sa.Integer(), nullable=False),
    sa.Column("deleted", sa.Boolean(), nullable=False),
    sa.Column("last_version", sa.Integer(), nullable=True),
)


@consumer(customers_topic, CUSTOMER_VIEW_GROUP)  # `convergent consume --import` runs it too
async def apply_customer(conn: AsyncConnection, message: Message) -> None:
    """Upsert the latest state; a tombstone deletes the row."""
    await apply_entity(conn, customer_view, message)


@consumer(customers_topic, BILLING_GROUP)
async def apply_billing_account(conn: AsyncConnection, message: Message) -> None:
    """Billing keeps whom to invoice; a deleted customer is no longer billed."""
    await apply_entity(conn, billing_accounts, message)


@consumer(customers_topic, ANALYTICS_GROUP)
async def count_profile_change(conn: AsyncConnection, message: Message) -> None:
    """Analytics counts every change (the inbox makes a redelivery count once)."""
    c = customer_analytics.c
    version = None if message.is_tombstone else message.data.get("version")
    changed = await conn.execute(
        customer_analytics.update()
        .where(c.id == message.key)
        .values(
            changes=c.changes + 1,
            deleted=message.is_tombstone,
            last_version=sa.func.coalesce(version, c.last_version),
        )
    )
    if changed.rowcount == 0:
        await conn.execute(
            customer_analytics.insert().values(
                id=message.key, changes=1, deleted=message.is_tombstone, last_version=version
            )
        )


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
