"""Customers service: owns the ``customers`` entity topic.

Every write emits the customer's latest state (or a tombstone on delete) in the same transaction,
so the topic can never disagree with the table.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field

from convergent.errors import NotFound
from convergent.outbox import TopicKind, declare_topic, emit
from convergent.store import Store
from convergent.store.types import UTCDateTime
from convergent_shop.clients import AUTHENTICATED, owned, take
from convergent_shop.db import metadata

__all__ = ["CustomerIn", "CustomerState", "customers", "customers_topic", "router"]

customers = sa.Table(
    "shop_customers",
    metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


class CustomerIn(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=255)]
    email: Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class CustomerState(BaseModel):
    """The payload of the ``customers`` topic: the customer's latest state."""

    id: str
    name: str
    email: str
    version: int


#: the column's length; the guard refuses NUL anywhere in a path
CustomerId = Annotated[str, Path(min_length=1, max_length=255)]
customers_topic = declare_topic("customers", CustomerState, kind=TopicKind.ENTITY)
router = APIRouter(tags=["customers"], dependencies=[AUTHENTICATED])


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@router.put("/customers/{customer_id}")
async def put_customer(
    customer_id: CustomerId, body: CustomerIn, request: Request
) -> dict[str, Any]:
    """Create or replace a customer; emits its new state on ``customers``."""
    store = _store(request)
    now = store.clock.now()
    async with store.begin() as conn:
        await take(conn, "customer", customer_id, request)  # another client's: 404
        where = customers.c.id == customer_id
        current = (
            await conn.execute(store.sql.lock_row(sa.select(customers.c.version).where(where)))
        ).scalar()
        version = (current or 0) + 1
        values = {"name": body.name, "email": body.email, "version": version, "updated_at": now}
        if current is None:
            await conn.execute(customers.insert().values(id=customer_id, **values))
        else:
            await conn.execute(customers.update().where(where).values(**values))
        state = CustomerState(id=customer_id, name=body.name, email=body.email, version=version)
        await emit(conn, customers_topic, customer_id, "shop.customer.updated", state)
    return state.model_dump()


@router.delete("/customers/{customer_id}", status_code=204)
async def delete_customer(customer_id: CustomerId, request: Request) -> Response:
    """Delete a customer; emits a tombstone so read models delete it too."""
    store = _store(request)
    async with store.begin() as conn:
        await owned(conn, "customer", customer_id, request)
        result = await conn.execute(customers.delete().where(customers.c.id == customer_id))
        if not result.rowcount:
            raise NotFound(f"no customer {customer_id}")
        await emit(
            conn,
            customers_topic,
            customer_id,
            "shop.customer.deleted",
            None,
        )
    return Response(status_code=204)


@router.get("/customers/{customer_id}")
async def get_customer(customer_id: CustomerId, request: Request) -> dict[str, Any]:
    async with _store(request).read() as conn:
        await owned(conn, "customer", customer_id, request)
        row = (
            await conn.execute(sa.select(customers).where(customers.c.id == customer_id))
        ).one_or_none()
    if row is None:
        raise NotFound(f"no customer {customer_id}")
    return {"id": row.id, "name": row.name, "email": row.email, "version": row.version}
