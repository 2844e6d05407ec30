"""Orders service: accepts orders and reports their state."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from convergent.errors import NotFound
from convergent.http.middleware import transaction
from convergent.ids import uuid7
from convergent.shop.db import metadata
from convergent.store import Store
from convergent.store.types import JSONType, UTCDateTime

__all__ = ["OrderIn", "orders", "router"]

orders = sa.Table(
    "shop_orders",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("client", sa.String(255), nullable=False),
    sa.Column("customer_id", sa.String(255), nullable=False),
    sa.Column("items", JSONType, nullable=False),
    sa.Column("amount", sa.Numeric(14, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


class Item(BaseModel):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Annotated[int, Field(gt=0, le=1000)]


class OrderIn(BaseModel):
    customer_id: Annotated[str, Field(min_length=1, max_length=255)]
    items: Annotated[list[Item], Field(min_length=1, max_length=100)]
    amount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
    currency: Annotated[str, Field(pattern="^[A-Z]{3}$")]


def order_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "customer_id": row.customer_id,
        "items": row.items,
        "amount": str(row.amount),
        "currency": row.currency,
        "state": row.state,
        "version": row.version,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


router = APIRouter(tags=["orders"])


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@router.post("/orders", status_code=202)
async def create_order(body: OrderIn, request: Request, response: Response) -> dict[str, Any]:
    store = _store(request)
    now = store.clock.now()
    order_id = uuid7()
    async with transaction(request) as conn:
        await conn.execute(
            orders.insert().values(
                id=order_id,
                client=request.headers.get("x-api-key", ""),
                customer_id=body.customer_id,
                items=[i.model_dump() for i in body.items],
                amount=body.amount,
                currency=body.currency,
                state="pending",
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
        row = (await conn.execute(orders.select().where(orders.c.id == order_id))).one()
    response.headers["Location"] = f"/orders/{order_id}"
    return order_view(row)


@router.get("/orders/{order_id}")
async def get_order(order_id: str, request: Request, response: Response) -> dict[str, Any]:
    store = _store(request)
    try:
        key = uuid.UUID(order_id)
    except ValueError:
        raise NotFound(f"no order {order_id}") from None
    async with store.read() as conn:
        row = (await conn.execute(orders.select().where(orders.c.id == key))).one_or_none()
    if row is None:
        raise NotFound(f"no order {order_id}")
    response.headers["ETag"] = f'"{row.version}"'
    return order_view(row)
