"""A fake payment provider with its own ledger, idempotency keys and injected faults.

It stands in for the real provider a shop charges: it honours ``Idempotency-Key`` on
``POST /payments``, answers lookups by key (what a saga's reconcile step needs after a lost
response) and reports a ledger from which double and lost charges are counted. Faults are
configured at start-up or with ``PUT /faults``: a 5xx before charging, a 5xx after charging,
a lost response (the charge commits, then the connection is dropped mid-answer) and latency.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Header, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convergent.errors import (
    IdempotencyKeyMismatch,
    IdempotencyKeyMissing,
    InvalidTransition,
    NotFound,
)
from convergent.http.problem import Problem, install_problem_handlers
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.types import UTCDateTime
from convergent_shop.keyed import insert_once

__all__ = [
    "Faults",
    "create_psp_app",
    "money",
    "psp_metadata",
    "psp_payments",
    "read_ledger",
    "to_cents",
]

psp_metadata = sa.MetaData()

psp_payments = sa.Table(
    "psp_payments",
    psp_metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("amount_cents", sa.BigInteger(), nullable=False),  # integers: exact on both DBs
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reference", sa.String(255), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # authorized|captured|voided|refunded
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

_DROP_HEADER = "x-psp-drop-connection"


class Faults(BaseModel):
    """What goes wrong, and how often (rates are probabilities per mutating request)."""

    lost_response_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_before_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_after_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    latency_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    seed: int | None = None

    @classmethod
    def spread(cls, rate: float, seed: int | None = None, latency_ms: int = 0) -> Faults:
        """One overall ``rate`` shared equally by the three failure modes."""
        third = rate / 3
        return cls(
            lost_response_rate=third,
            error_before_rate=third,
            error_after_rate=third,
            latency_ms=latency_ms,
            seed=seed,
        )


class PaymentIn(BaseModel):
    amount: Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=2)]
    currency: Annotated[str, Field(pattern="^[A-Z]{3}$")]
    reference: Annotated[str, Field(min_length=1, max_length=255)]


class _State:
    def __init__(self, store: Store, faults: Faults) -> None:
        self.store = store
        self.set_faults(faults)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    async def before(self) -> None:
        """Latency, then maybe a 5xx before anything is written."""
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if self.rng.random() < self.faults.error_before_rate:
            raise Problem(503, "psp-unavailable", "injected failure before charging")

    def after(self, response: Response) -> None:
        """After the commit: maybe drop the answer, maybe turn it into a 5xx."""
        roll = self.rng.random()
        if roll < self.faults.lost_response_rate:
            response.headers[_DROP_HEADER] = "1"
        elif roll < self.faults.lost_response_rate + self.faults.error_after_rate:
            raise Problem(500, "psp-failed-after-commit", "injected failure after charging")


class _DropConnection:
    """Sends the status line of a marked answer and never its body: the client sees a
    connection closed mid-response, as when a network path dies after the provider acted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        dropping = False

        async def guarded(message: Message) -> None:
            nonlocal dropping
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                dropping = _DROP_HEADER.encode() in names
                if dropping:
                    headers = [(b"content-type", b"application/json"), (b"content-length", b"64")]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    return
            if dropping:
                return  # the body never leaves; the server closes the incomplete response
            await send(message)

        await self.app(scope, receive, guarded)


def _fingerprint(body: PaymentIn) -> str:
    canonical = {**body.model_dump(), "amount": to_cents(body.amount)}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def to_cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def money(cents: int | None) -> str:
    """Cents as a decimal string, ``"12.50"``."""
    return str((Decimal(cents or 0) / 100).quantize(Decimal("0.01")))


def payment_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "idempotency_key": row.idempotency_key,
        "status": row.status,
        "amount": money(row.amount_cents),
        "currency": row.currency,
        "reference": row.reference,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


_TRANSITIONS: dict[str, tuple[frozenset[str], str, frozenset[str]]] = {
    # action: (allowed from, to, already-done states that answer as success)
    "capture": (frozenset({"authorized"}), "captured", frozenset({"captured", "refunded"})),
    "void": (frozenset({"authorized"}), "voided", frozenset({"voided"})),
    "refund": (frozenset({"captured"}), "refunded", frozenset({"refunded"})),
}


def _router(state: _State) -> APIRouter:
    router = APIRouter()
    table = psp_payments

    async def by_id(conn: Any, payment_id: str) -> Any:
        try:
            key = uuid.UUID(payment_id)
        except ValueError:
            raise NotFound(f"no payment {payment_id}") from None
        row = (await conn.execute(table.select().where(table.c.id == key))).one_or_none()
        if row is None:
            raise NotFound(f"no payment {payment_id}")
        return row

    @router.post("/payments", status_code=201)
    async def authorize(
        body: PaymentIn,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> dict[str, Any]:
        if not idempotency_key:
            raise IdempotencyKeyMissing("POST /payments needs an Idempotency-Key header")
        await state.before()
        fingerprint = _fingerprint(body)
        now = state.store.clock.now()
        async with state.store.begin() as conn:
            created = await insert_once(
                conn,
                table,
                {
                    "id": uuid7(),
                    "idempotency_key": idempotency_key,
                    "fingerprint": fingerprint,
                    "amount_cents": to_cents(body.amount),
                    "currency": body.currency,
                    "reference": body.reference,
                    "status": "authorized",
                    "created_at": now,
                    "updated_at": now,
                },
            )
            query = table.select().where(table.c.idempotency_key == idempotency_key)
            row = (await conn.execute(query)).one()
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyMismatch("this Idempotency-Key was used for another payment")
        if not created:
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
        state.after(response)
        return payment_view(row)

    async def transition(payment_id: str, action: str, response: Response) -> dict[str, Any]:
        await state.before()
        allowed, target, done = _TRANSITIONS[action]
        async with state.store.begin() as conn:
            row = await by_id(conn, payment_id)
            if row.status in allowed:
                await conn.execute(
                    table.update()
                    .where(table.c.id == row.id, table.c.status == row.status)
                    .values(status=target, updated_at=state.store.clock.now())
                )
                row = await by_id(conn, payment_id)  # a concurrent move may have won instead
            if row.status not in done:
                raise InvalidTransition(f"cannot {action} a payment that is {row.status}")
        state.after(response)
        return payment_view(row)

    @router.post("/payments/{payment_id}/capture")
    async def capture(payment_id: str, response: Response) -> dict[str, Any]:
        return await transition(payment_id, "capture", response)

    @router.post("/payments/{payment_id}/void")
    async def void(payment_id: str, response: Response) -> dict[str, Any]:
        return await transition(payment_id, "void", response)

    @router.post("/payments/{payment_id}/refund")
    async def refund(payment_id: str, response: Response) -> dict[str, Any]:
        return await transition(payment_id, "refund", response)

    @router.get("/payments/{payment_id}")
    async def get_payment(payment_id: str) -> dict[str, Any]:
        async with state.store.read() as conn:
            return payment_view(await by_id(conn, payment_id))

    @router.get("/payments")
    async def lookup(idempotency_key: str) -> dict[str, Any]:
        query = table.select().where(table.c.idempotency_key == idempotency_key)
        async with state.store.read() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"no payment was made with key {idempotency_key}")
        return payment_view(row)

    @router.get("/ledger")
    async def ledger() -> dict[str, Any]:
        async with state.store.read() as conn:
            return await read_ledger(conn)

    @router.get("/faults")
    async def get_faults() -> Faults:
        return state.faults

    @router.put("/faults")
    async def put_faults(faults: Faults) -> Faults:
        state.set_faults(faults)
        return state.faults

    return router


async def read_ledger(conn: Any) -> dict[str, Any]:
    """Totals per status, payments per key and captured payments per reference."""
    table = psp_payments
    totals: dict[str, Any] = {
        s: {"count": 0, "amount": "0.00"} for s in ("authorized", "captured", "voided", "refunded")
    }
    rows = await conn.execute(
        sa.select(table.c.status, sa.func.count(), sa.func.sum(table.c.amount_cents)).group_by(
            table.c.status
        )
    )
    for status, count, amount in rows:
        totals[status] = {
            "count": count,
            "amount": money(amount),
        }
    by_key = sa.select(table.c.idempotency_key, sa.func.count()).group_by(table.c.idempotency_key)
    per_key = {k: n for k, n in await conn.execute(by_key)}
    by_reference = (
        sa.select(table.c.reference, sa.func.count())
        .where(table.c.status == "captured")
        .group_by(table.c.reference)
    )
    per_reference = {ref: n for ref, n in await conn.execute(by_reference)}
    return {
        **totals,
        "payments": sum(t["count"] for t in totals.values()),
        "per_key": per_key,
        "captured_per_reference": per_reference,
        "double_charges": sorted(ref for ref, n in per_reference.items() if n > 1),
    }


async def create_psp_tables(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(psp_metadata.create_all)


def create_psp_app(store: Store, faults: Faults | None = None) -> FastAPI:
    """The provider's ASGI app on its own ``store`` (tables are created at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await create_psp_tables(store)
        yield

    state = _State(store, faults or Faults())
    app = FastAPI(title="convergent fake payment provider", lifespan=lifespan)
    app.state.psp = state
    install_problem_handlers(app)
    app.include_router(_router(state))
    app.add_middleware(_DropConnection)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
