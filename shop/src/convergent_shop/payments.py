"""Payments: one payment per order at the provider, every call carrying the step's key.

``authorize`` after a lost answer asks the provider by key before trying again, so a charge
that went through is adopted, never repeated. A ``void`` that overtakes its ``authorize``
leaves a voided tombstone, and the late authorize then charges nothing.

These run inside the caller's transaction and call the provider from it: keep the client's
timeout short (on SQLite the transaction holds the write lock meanwhile).
"""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import InvalidTransition, PermanentError, TransientError
from convergent.store import direct
from convergent.store.types import UTCDateTime
from convergent_shop.db import metadata
from convergent_shop.keyed import insert_once
from convergent_shop.psp import money, to_cents
from convergent_shop.psp_client import PspClient

__all__ = [
    "abandon",
    "adopt",
    "authorize",
    "capture",
    "decline",
    "open_authorization",
    "payment_row",
    "payments",
    "reconcile",
    "void",
]

payments = sa.Table(
    "shop_payments",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("authorize_key", sa.String(255), nullable=False, unique=True),
    sa.Column("psp_payment_id", sa.String(64), nullable=True),
    sa.Column("amount_cents", sa.BigInteger(), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    # pending | authorized | captured | voided | refunded | declined
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(255), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

_SETTLED = frozenset({"authorized", "captured", "voided", "refunded", "declined"})
# built once, executed with parameters: building a statement costs more than running it
_BY_ORDER = payments.select().where(payments.c.order_id == sa.bindparam("b_order"))


async def _row(conn: AsyncConnection, order_id: str) -> Any:
    return (await direct.execute(conn, _BY_ORDER, {"b_order": order_id})).one_or_none()


def _view(row: Any) -> dict[str, Any]:
    return {
        "order_id": row.order_id,
        "status": row.status,
        "psp_payment_id": row.psp_payment_id,
        "amount": money(row.amount_cents),
        "currency": row.currency,
        "reason": row.reason,
    }


async def _set(conn: AsyncConnection, order_id: str, now: datetime, **values: Any) -> Any:
    update = _update(frozenset(values))
    params = {f"v_{name}": value for name, value in values.items()}
    await direct.execute(conn, update, {"b_order": order_id, "v_updated_at": now, **params})
    return await _row(conn, order_id)


@functools.cache
def _update(columns: frozenset[str]) -> sa.Update:
    """The payment's update of ``columns`` (and ``updated_at``), built once per column set."""
    binds = {
        name: sa.bindparam(f"v_{name}", type_=payments.c[name].type)
        for name in ("updated_at", *sorted(columns))
    }
    return payments.update().where(payments.c.order_id == sa.bindparam("b_order")).values(binds)


async def _adopt(conn: AsyncConnection, order_id: str, found: dict[str, Any], now: datetime) -> Any:
    """Take the provider's word for the payment's state."""
    return await _set(conn, order_id, now, status=found["status"], psp_payment_id=found["id"])


async def payment_row(conn: AsyncConnection, order_id: str) -> Any:
    """The order's payment record, or None."""
    return await _row(conn, order_id)


async def open_authorization(
    conn: AsyncConnection,
    order_id: str,
    amount: Decimal | str,
    currency: str,
    key: str,
    now: datetime,
) -> Any:
    """Record the intent to authorize with ``key`` (once); returns the payment row.

    The provider is then called OUTSIDE any transaction and the outcome recorded with `adopt`
    or `decline`, so no database lock is held while the provider thinks (or never answers).
    """
    values = {
        "order_id": order_id,
        "authorize_key": key,
        "amount_cents": to_cents(Decimal(str(amount))),
        "currency": currency,
        "status": "pending",
        "updated_at": now,
    }
    await insert_once(conn, payments, values)
    return await _row(conn, order_id)


async def adopt(
    conn: AsyncConnection, order_id: str, found: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Record what the provider says about the order's payment."""
    return _view(await _adopt(conn, order_id, found, now))


async def decline(
    conn: AsyncConnection, order_id: str, reason: str, now: datetime
) -> dict[str, Any]:
    """Record that the provider refused the payment for good."""
    return _view(await _set(conn, order_id, now, status="declined", reason=reason[:255]))


async def abandon(conn: AsyncConnection, order_id: str, now: datetime) -> dict[str, Any]:
    """Mark a payment the provider never saw as voided: nothing to undo there."""
    return _view(await _set(conn, order_id, now, status="voided"))


def is_settled(row: Any) -> bool:
    return row is not None and row.status in _SETTLED


def view(row: Any) -> dict[str, Any]:
    return _view(row)


async def authorize(
    conn: AsyncConnection,
    psp: PspClient,
    order_id: str,
    amount: Decimal | str,
    currency: str,
    key: str,
    now: datetime,
) -> dict[str, Any]:
    """Authorize the order's payment with ``key``; a second call never charges again."""
    cents = to_cents(Decimal(str(amount)))
    await insert_once(
        conn,
        payments,
        {
            "order_id": order_id,
            "authorize_key": key,
            "amount_cents": cents,
            "currency": currency,
            "status": "pending",
            "updated_at": now,
        },
    )
    row = await _row(conn, order_id)
    if row.status in _SETTLED:
        return _view(row)
    try:
        made = await psp.authorize(
            row.authorize_key, amount=money(cents), currency=currency, reference=order_id
        )
    except TransientError:
        found = await psp.lookup(row.authorize_key)  # did it go through before the answer was lost?
        if found is None:
            raise
        made = found
    except PermanentError as exc:
        return _view(await _set(conn, order_id, now, status="declined", reason=exc.message[:255]))
    return _view(await _adopt(conn, order_id, made, now))


async def capture(
    conn: AsyncConnection, psp: PspClient, order_id: str, key: str, now: datetime
) -> dict[str, Any]:
    """Capture the authorized payment; idempotent by state."""
    row = await _row(conn, order_id)
    if row is None:
        raise InvalidTransition(f"order {order_id} has no payment to capture")
    if row.status == "pending":
        row = await _reconciled(conn, psp, row, now)
    if row.status == "captured":
        return _view(row)
    if row.status != "authorized":
        raise InvalidTransition(f"cannot capture a payment that is {row.status}")
    done = await psp.capture(row.psp_payment_id, key)
    return _view(await _adopt(conn, order_id, done, now))


async def void(
    conn: AsyncConnection, psp: PspClient, order_id: str, key: str, now: datetime
) -> dict[str, Any]:
    """Undo the order's payment (void if authorized, refund if captured); idempotent."""
    tombstone = {"order_id": order_id, "authorize_key": f"void:{key}", "amount_cents": 0}
    values = {**tombstone, "currency": "XXX", "status": "voided", "updated_at": now}
    if await insert_once(conn, payments, values):
        return _view(await _row(conn, order_id))  # never authorized; a late authorize won't charge
    row = await _row(conn, order_id)
    if row.status == "pending":
        row = await _reconciled(conn, psp, row, now)
        if row.status == "pending":  # the provider never saw it: nothing to undo
            return _view(await _set(conn, order_id, now, status="voided"))
    if row.status == "authorized":
        return _view(await _adopt(conn, order_id, await psp.void(row.psp_payment_id, key), now))
    if row.status == "captured":
        done = await psp.refund(row.psp_payment_id, key)
        return _view(await _adopt(conn, order_id, done, now))
    return _view(row)


async def _reconciled(conn: AsyncConnection, psp: PspClient, row: Any, now: datetime) -> Any:
    found = await psp.lookup(row.authorize_key)
    return row if found is None else await _adopt(conn, row.order_id, found, now)


async def reconcile(
    conn: AsyncConnection, psp: PspClient, order_id: str, key: str, now: datetime
) -> dict[str, Any]:
    """Bring the local record in line with what the provider holds for the authorize key."""
    row = await _row(conn, order_id)
    if row is None:
        raise InvalidTransition(f"order {order_id} has no payment to reconcile")
    return _view(await _reconciled(conn, psp, row, now))
