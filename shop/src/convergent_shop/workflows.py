"""The shop's durable workflows: the order saga of seed 001 and the booking lifecycle of seed 000.

reserve stock → authorize payment (at the provider) → create shipment → capture and complete.
When a step fails for good, or the order is cancelled, the completed steps are undone newest
first (cancel shipment, void or refund the payment, release stock) and the order ends ``failed``
or ``cancelled``. Every provider call carries the step's idempotency key and is made outside
any database transaction; its outcome is recorded in a short transaction of its own.

`convergent worker` imports this module by default.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import InvalidTransition, PermanentError, RunCancelled, TransientError
from convergent.retry import RetryPolicy
from convergent.store import direct, store_of
from convergent.workflows import Saga, StepContext, WorkflowContext, step, workflow
from convergent_shop import bookings, inventory, payments, shipping
from convergent_shop import settings as shop_settings
from convergent_shop.events import announce
from convergent_shop.metrics import observe_final_order
from convergent_shop.orders import ORDER_SAGA, ORDERS, orders
from convergent_shop.psp import money
from convergent_shop.psp_client import PspClient

__all__ = ["PSP_URL_ENV", "booking_lifecycle", "close_psp_clients", "order_saga", "psp_client"]

PSP_URL_ENV = "CONVERGENT_PSP_URL"

FORWARD = RetryPolicy(max_attempts=8, initial_delay=0.2, multiplier=2.0, max_delay=5.0)
# an undo must happen: keep trying for a long while before a person is asked (dead letter)
UNDO = RetryPolicy(max_attempts=30, initial_delay=0.2, multiplier=2.0, max_delay=10.0)

# a pool's connections belong to the loop that opened them; a loop that is gone takes its own
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, PspClient]] = (
    weakref.WeakKeyDictionary()
)


def psp_client() -> PspClient:
    """One pooled provider client per URL and event loop."""
    url = shop_settings.load().psp_url
    of_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    if url not in of_loop:
        of_loop[url] = PspClient(url, timeout=2.0)
    return of_loop[url]


async def close_psp_clients() -> None:
    """Close this loop's provider clients (their pooled connections), as the app stops."""
    for client in _clients.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


# built once: every step reads its order, and building a statement costs more than running it
_ORDER = orders.select().where(orders.c.id == sa.bindparam("b_id"))


async def _order(conn: AsyncConnection, order_id: str) -> Any:
    return (await direct.execute(conn, _ORDER, {"b_id": uuid.UUID(order_id)})).one()


async def _move(conn: AsyncConnection, order_id: str, action: str) -> Any:
    """Transition the order and announce it; None when a cancel got there first."""
    try:
        row = await ORDERS.transition(conn, uuid.UUID(order_id), action, actor="saga")
    except InvalidTransition:
        return None
    await announce(conn, "order", row, order_id)
    if ORDERS.machine.is_terminal(row.state):
        observe_final_order(row.state, row.created_at, store_of(conn).clock.now())
    return row


async def _enter_compensating(conn: AsyncConnection, order_id: str) -> None:
    row = await _order(conn, order_id)
    if row.state in ("reserved", "authorized"):
        await _move(conn, order_id, "compensate")


# forward steps -------------------------------------------------------------------------------


@step(retry=FORWARD)
async def reserve_stock(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    async with ctx.transaction() as conn:
        row = await _order(conn, order_id)
        if row.state != "pending":
            # a replay: this step reserved before its worker died, its checkpoint unwritten
            done = await inventory.reservation_made_with(conn, order_id, ctx.idempotency_key)
            if row.state == "reserved" and done is not None:
                return done
            raise PermanentError(f"order {order_id} is {row.state}")
        reserved = await inventory.reserve(
            conn, order_id, row.items, ctx.idempotency_key, store.clock.now()
        )
        if reserved["status"] == "rejected":
            raise PermanentError(reserved.get("reason") or "out of stock")
        await _move(conn, order_id, "reserve")
    return reserved


@step(retry=FORWARD)
async def authorize_payment(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    async with ctx.transaction() as conn:
        row = await _order(conn, order_id)
        payment = await payments.open_authorization(
            conn, order_id, row.amount, row.currency, ctx.idempotency_key, store.clock.now()
        )
    answer = None if payments.is_settled(payment) else await _ask_provider(payment, order_id)
    # the provider's answer and the order's move commit together: one write, not two (on
    # SQLite every write transaction queues for the one writer)
    async with ctx.transaction() as conn:
        if isinstance(answer, str):
            outcome = await payments.decline(conn, order_id, answer, store.clock.now())
        elif answer is not None:
            outcome = await payments.adopt(conn, order_id, answer, store.clock.now())
        else:
            outcome = payments.view(payment)
        if outcome["status"] == "authorized":
            await _move(conn, order_id, "authorize")
    if outcome["status"] != "authorized":
        raise PermanentError(f"payment {outcome['status']}: {outcome.get('reason') or ''}")
    return outcome


async def _ask_provider(payment: Any, order_id: str) -> dict[str, Any] | str:
    """The provider's record of the authorization, or the reason it declined."""
    psp = psp_client()
    try:
        return await psp.authorize(
            payment.authorize_key,
            amount=money(payment.amount_cents),
            currency=payment.currency,
            reference=order_id,
        )
    except TransientError:
        found = await psp.lookup(payment.authorize_key)  # did it land before the answer was lost?
        if found is None:
            raise
        return found
    except PermanentError as exc:
        return exc.message


@authorize_payment.reconciler
async def find_authorization(ctx: StepContext, order_id: str) -> dict[str, Any] | None:
    """After a crash mid-call: the provider's record for our key, if it has one."""
    found = await psp_client().lookup(ctx.idempotency_key)
    if found is None or found.get("status") != "authorized":
        return None
    store = ctx.store
    async with ctx.transaction() as conn:
        outcome = await payments.adopt(conn, order_id, found, store.clock.now())
        await _move(conn, order_id, "authorize")
    return outcome


@step(retry=FORWARD)
async def create_shipment(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    async with ctx.transaction() as conn:
        return await shipping.create_shipment(
            conn, order_id, ctx.idempotency_key, store.clock.now()
        )


@step(retry=FORWARD)
async def complete_order(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    # two reads, no transaction around them (the write below checks the state again)
    async with store.statement() as conn:
        row = await _order(conn, order_id)
        payment = await payments.payment_row(conn, order_id)
    if row.state == "completed":  # a replay: completed before its checkpoint was written
        return {"state": "completed"}
    if row.state != "authorized":
        raise PermanentError(f"order {order_id} is {row.state}; not completing")
    done = None
    if payment.status != "captured":
        done = await psp_client().capture(payment.psp_payment_id, ctx.idempotency_key)
    async with ctx.transaction() as conn:  # the capture, the move and the shipment: one write
        if done is not None:
            await payments.adopt(conn, order_id, done, store.clock.now())
        completed = await _move(conn, order_id, "complete")
        if completed is not None:
            await inventory.ship(conn, order_id, ctx.idempotency_key, store.clock.now())
    if completed is None:  # cancelled meanwhile: the compensations refund the capture
        raise PermanentError(f"order {order_id} was cancelled while completing")
    return {"state": "completed"}


# compensations --------------------------------------------------------------------------------


@step(retry=UNDO)
async def release_stock(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    async with ctx.transaction() as conn:
        await _enter_compensating(conn, order_id)
        return await inventory.release(conn, order_id, ctx.idempotency_key, store.clock.now())


@step(retry=UNDO)
async def void_payment(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    async with ctx.transaction() as conn:
        await _enter_compensating(conn, order_id)
        payment = await payments.payment_row(conn, order_id)
        if payment is None:  # never authorized: leave a tombstone so a late one charges nothing
            return await payments.void(
                conn, psp_client(), order_id, ctx.idempotency_key, store.clock.now()
            )
    psp = psp_client()
    state = payments.view(payment)
    if state["status"] in ("pending", "authorized"):
        # ask the provider first: a capture whose answer was lost may have happened, and then
        # the undo is a refund, not a void
        found = await psp.lookup(payment.authorize_key)
        if found is None:  # the provider never saw it: nothing to undo there
            async with ctx.transaction() as conn:
                return await payments.abandon(conn, order_id, store.clock.now())
        async with ctx.transaction() as conn:
            state = await payments.adopt(conn, order_id, found, store.clock.now())
    if state["status"] == "authorized":
        done = await psp.void(state["psp_payment_id"], ctx.idempotency_key)
    elif state["status"] == "captured":
        done = await psp.refund(state["psp_payment_id"], ctx.idempotency_key)
    else:
        return state
    async with ctx.transaction() as conn:
        return await payments.adopt(conn, order_id, done, store.clock.now())


@step(retry=UNDO)
async def cancel_shipment(ctx: StepContext, order_id: str) -> dict[str, Any]:
    store = ctx.store
    async with ctx.transaction() as conn:
        await _enter_compensating(conn, order_id)
        return await shipping.cancel_shipment(
            conn, order_id, ctx.idempotency_key, store.clock.now()
        )


async def _cancelled_by_client(conn: AsyncConnection, order_id: str) -> bool:
    """Whether a client's cancel moved the order: one that commits between two steps makes the
    next step fail on the order's state before the worker sees the run's cancel request."""
    return any(e.action == "cancel" for e in await ORDERS.history(conn, uuid.UUID(order_id)))


@step(retry=UNDO)
async def settle_order(ctx: StepContext, order_id: str, outcome: str) -> str:
    """Bring the order to its final state after the undo: ``cancelled`` or ``failed``."""
    async with ctx.transaction() as conn:
        row = await _order(conn, order_id)
        if row.state in ("completed", "cancelled", "failed"):
            return str(row.state)
        await _enter_compensating(conn, order_id)
        row = await _order(conn, order_id)
        if outcome == "cancelled" or await _cancelled_by_client(conn, order_id):
            action = "cancel" if row.state == "pending" else "mark_cancelled"
        else:
            action = "mark_failed"
        final = await _move(conn, order_id, action)
        return str(final.state if final is not None else (await _order(conn, order_id)).state)


# the saga -------------------------------------------------------------------------------------


@workflow(name=ORDER_SAGA)
async def order_saga(ctx: WorkflowContext, order_id: str) -> str:
    try:
        async with Saga() as saga:
            await saga.step(reserve_stock, order_id, compensate=release_stock)
            await saga.step(authorize_payment, order_id, compensate=void_payment)
            await saga.step(create_shipment, order_id, compensate=cancel_shipment)
            await complete_order(order_id)
    except RunCancelled:
        await settle_order(order_id, "cancelled")
        raise
    except Exception:
        await settle_order(order_id, "failed")
        raise
    return "completed"


# bookings (seed 000): confirm, then archive one day before the booking -------------------------

ARCHIVE_BEFORE = timedelta(days=1)


@step(retry=FORWARD)
async def confirm_booking(ctx: StepContext, booking_id: str) -> str:
    """Decide a pending booking (ready or failed); the state it is in afterwards."""
    async with ctx.transaction() as conn:
        await bookings.confirm_booking(conn, uuid.UUID(booking_id))
        row = await bookings.BOOKINGS.get(conn, uuid.UUID(booking_id))
    return str(row.state) if row is not None else "missing"


@step(retry=FORWARD)
async def archive_time(ctx: StepContext, booking_id: str) -> str | None:
    """When the booking is to be archived (it may have been moved), or None once it is over."""
    async with ctx.store.read() as conn:
        row = await bookings.BOOKINGS.get(conn, uuid.UUID(booking_id))
    if row is None or row.state != "ready" or row.time is None:
        return None
    return str((row.time - ARCHIVE_BEFORE).isoformat())


@step(retry=FORWARD)
async def archive_booking(ctx: StepContext, booking_id: str) -> str:
    async with ctx.transaction() as conn:
        try:
            row = await bookings.BOOKINGS.transition(
                conn, uuid.UUID(booking_id), "archive", actor="archiver"
            )
        except InvalidTransition:  # cancelled meanwhile
            return "not archived"
        await announce(conn, "booking", row, row.code)
    return str(row.state)


@workflow(name=bookings.BOOKING_LIFECYCLE)
async def booking_lifecycle(ctx: WorkflowContext, booking_id: str) -> str:
    state = await confirm_booking(booking_id)
    if state != "ready":
        return state
    slept_until = None
    while True:  # a PATCH may move the booking: read the time again after every sleep
        when = await archive_time(booking_id)
        if when is None:
            return "over"
        if when == slept_until:  # branch on recorded results only, never on the clock
            return await archive_booking(booking_id)
        await ctx.sleep_until(datetime.fromisoformat(when))
        slept_until = when
