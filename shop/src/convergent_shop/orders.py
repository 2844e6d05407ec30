"""Orders service: accepts orders and reports their state."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import NotFound
from convergent.http.conditional import etag, evaluate_request
from convergent.http.middleware import after_commit, transaction
from convergent.http.openapi import header_parameters
from convergent.http.prefer import accepted_headers, preference_applied, requested_wait
from convergent.ids import uuid7
from convergent.resources import Action, ResourceTable, StateMachine, wait_for
from convergent.store import Store, direct
from convergent.store.types import JSONType, UTCDateTime
from convergent.workflows import cancel, get_workflow, start
from convergent_shop.clients import AUTHENTICATED, actor, client_id
from convergent_shop.db import metadata
from convergent_shop.events import announce
from convergent_shop.fields import JsonInt

__all__ = ["ORDERS", "ORDER_SAGA", "OrderIn", "orders", "router"]

#: the order saga, started by name: the saga (convergent_shop.workflows) imports this module
ORDER_SAGA = "shop.order"

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

# the saga (DESIGN.md): reserve inventory -> authorize payment -> create shipment; a failure after
# a step runs compensations (compensating) and ends failed, a cancel ends cancelled
ORDER_MACHINE = StateMachine(
    "order",
    initial="pending",
    actions=[
        Action("reserve", "pending", "reserved"),
        Action("authorize", "reserved", "authorized"),
        Action("complete", "authorized", "completed"),
        Action("compensate", ["reserved", "authorized"], "compensating"),
        Action(
            "cancel",
            ["pending", "reserved", "authorized"],
            {"pending": "cancelled", "reserved": "compensating", "authorized": "compensating"},
        ),
        Action("mark_cancelled", "compensating", "cancelled"),
        Action("mark_failed", ["pending", "compensating"], "failed"),
    ],
    terminal=["completed", "cancelled", "failed"],
)
ORDERS = ResourceTable(orders, ORDER_MACHINE)
# built once, executed with parameters: building a statement costs more than running it
_INSERT = orders.insert()
_BY_ID = orders.select().where(orders.c.id == sa.bindparam("b_id"))
ORDER_WAIT_LIMIT = 30.0  # most a POST /orders waits for Prefer: wait
_STEPS = ("reserve", "authorize", "ship")
_DONE_STEPS = {"pending": 0, "reserved": 1, "authorized": 2, "completed": 3}


def order_actions(state: str) -> dict[str, dict[str, str]]:
    """Per-step statuses (pending / succeeded / failed) derived from the order's state."""
    if state in _DONE_STEPS:
        done = _DONE_STEPS[state]
        return {
            step: {"status": "succeeded" if i < done else "pending"}
            for i, step in enumerate(_STEPS)
        }
    if state == "cancelled":
        return {"cancel": {"status": "succeeded"}}
    if state == "compensating":
        return {"compensate": {"status": "pending"}}
    return {"order": {"status": "failed"}}


class Item(BaseModel):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    qty: Annotated[JsonInt, Field(gt=0, le=1000)]


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
        "actions": order_actions(row.state),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


router = APIRouter(tags=["orders"], dependencies=[AUTHENTICATED])


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


@router.post("/orders", status_code=202, openapi_extra=header_parameters("Idempotency-Key"))
async def create_order(body: OrderIn, request: Request, response: Response) -> Any:
    """Accept the order and start its saga in one transaction; ``Prefer: wait=N`` waits for it."""
    order_saga = get_workflow(ORDER_SAGA)

    store = _store(request)
    now = store.clock.now()
    order_id = uuid7()
    async with transaction(request) as conn:
        await direct.execute(
            conn,
            _INSERT,
            {
                "id": order_id,
                "client": client_id(request),
                "customer_id": body.customer_id,
                "items": [i.model_dump() for i in body.items],
                "amount": body.amount,
                "currency": body.currency,
                "state": "pending",
                "version": 1,
                "created_at": now,
                "updated_at": now,
            },
        )
        row = (await direct.execute(conn, _BY_ID, {"b_id": order_id})).one()
        await ORDERS.record_created(conn, row, actor=actor(request))
        await announce(conn, "order", row, str(order_id))
        await start(conn, order_saga, str(order_id), key=str(order_id))
    wait = requested_wait(request, limit=ORDER_WAIT_LIMIT)
    if wait is not None:

        async def final_answer() -> Response:
            return await _answer_after_wait(store, row, wait)

        if not after_commit(request, final_answer):
            return await final_answer()
    response.headers["ETag"] = etag(row.version)
    response.headers.update(accepted_headers(f"/orders/{order_id}"))
    return order_view(row)


async def _answer_after_wait(store: Store, row: Any, wait: float) -> Response:
    """Prefer: wait=N: the final order (201) if it ends within min(N, limit), else 202."""
    row = await wait_for(
        store,
        ORDERS.resource_type,
        row.id,
        lambda conn: _load(conn, row.id),
        lambda r: ORDER_MACHINE.is_terminal(r.state),
        timeout=wait,
    )
    headers = {"ETag": etag(row.version), **preference_applied(wait)}
    if ORDER_MACHINE.is_terminal(row.state):
        return JSONResponse(order_view(row), status_code=201, headers=headers)
    headers.update(accepted_headers(f"/orders/{row.id}"))
    return JSONResponse(order_view(row), status_code=202, headers=headers)


def _order_id(order_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(order_id)
    except ValueError:
        raise NotFound(f"no order {order_id}") from None


async def _load(conn: AsyncConnection, key: uuid.UUID, client: str | None = None) -> Any:
    """The order ``key``; NotFound if it does not exist or ``client`` is not its owner."""
    row = (await direct.execute(conn, _BY_ID, {"b_id": key})).one_or_none()
    if row is None or (client is not None and row.client != client):
        raise NotFound(f"no order {key}")
    return row


@router.get("/orders/{order_id}")
async def get_order(order_id: str, request: Request, response: Response) -> Any:
    store = _store(request)
    async with store.statement() as conn:  # one read: no transaction around it
        row = await _load(conn, _order_id(order_id), client_id(request))
    if evaluate_request(request, row.version).not_modified:
        return Response(status_code=304, headers={"ETag": etag(row.version)})
    response.headers["ETag"] = etag(row.version)
    return order_view(row)


@router.post(
    "/orders/{order_id}/cancel", openapi_extra=header_parameters("If-Match", required=False)
)
async def cancel_order(order_id: str, request: Request, response: Response) -> dict[str, Any]:
    """Cancel (with compensation once steps ran); If-Match required: 428 / 412 / 409."""
    order_saga = get_workflow(ORDER_SAGA)

    store = _store(request)
    async with store.begin() as conn:
        row = await _load(conn, _order_id(order_id), client_id(request))
        expected = evaluate_request(request, row.version, require_if_match=True).expected_version
        # the run's row before the order's, as the saga's steps lock them (their fence holds
        # the run, then they move the order): the other way round, a cancel arriving during a
        # step deadlocks with it. The run's key is the order id: `start` hands back the
        # existing run, which compensates.
        run_id = await start(conn, order_saga, str(row.id), key=str(row.id))
        await cancel(conn, run_id)
        row = await ORDERS.transition(
            conn,
            row.id,
            "cancel",
            expected_version=expected,
            actor=actor(request),
        )
        await announce(conn, "order", row, str(row.id))
    response.headers["ETag"] = etag(row.version)
    return order_view(row)


@router.get("/orders/{order_id}/history")
async def order_history(order_id: str, request: Request) -> dict[str, Any]:
    async with _store(request).read() as conn:
        row = await _load(conn, _order_id(order_id), client_id(request))
        entries = await ORDERS.history(conn, row.id)
    return {"id": str(row.id), "items": [e.to_dict() for e in entries]}
