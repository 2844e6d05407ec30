"""Bookings service (restaurant tables): create-or-get by the client's booking code.

``PUT /bookings/{code}`` is idempotent: the code, scoped to the API key's client, is the
idempotency key. Confirmation is asynchronous: each new booking starts a durable run
(``shop.booking`` in `convergent_shop.workflows`) that calls ``confirm_booking`` and then sleeps
until a day before the booking to archive it; the PUT waits for the confirmation up to the 5 s
SLA and otherwise answers 202. ``run_confirmer`` is a polling sweep kept for operators.
The server-created flow is here too: ``POST /bookings`` hands out a code for a ``draft`` and
``PUT /bookings/{code}/confirm`` submits it exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from datetime import timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import IdempotencyKeyMismatch, InvalidTransition, NotFound, StaleVersion
from convergent.http.conditional import etag, evaluate_request
from convergent.http.openapi import header_parameters
from convergent.http.prefer import accepted_headers, preference_applied, requested_wait
from convergent.resources import (
    CHANNEL,
    Action,
    ResourceTable,
    StateMachine,
    confirm_once,
    wait_for,
)
from convergent.store import Store, store_of
from convergent.store.types import JSONType, UTCDateTime
from convergent.workflows import get_workflow, start
from convergent_shop.clients import AUTHENTICATED, actor, client_id
from convergent_shop.db import metadata
from convergent_shop.events import announce
from convergent_shop.fields import JsonDatetime, JsonInt

__all__ = [
    "BOOKINGS",
    "BOOKING_LIFECYCLE",
    "bookings",
    "confirm_booking",
    "router",
    "run_confirmer",
]

BOOKING_LIFECYCLE = "shop.booking"

log = logging.getLogger(__name__)

MAX_PARTY = 20
BOOKING_SLA = 5.0  # seconds a PUT may wait for the final answer

bookings = sa.Table(
    "shop_bookings",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("client", sa.String(255), nullable=False),
    sa.Column("code", sa.String(128), nullable=False),
    sa.Column("restaurant", sa.String(255), nullable=True),
    sa.Column("time", UTCDateTime(), nullable=True),
    sa.Column("party_size", sa.Integer(), nullable=True),
    sa.Column("name", sa.String(255), nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # of the creating request
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("problem", JSONType, nullable=True),  # why confirmation failed
    sa.Column("confirmed_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("client", "code", name="uq_shop_bookings_client_code"),
)

MACHINE = StateMachine(
    "booking",
    initial="pending",
    actions=[
        Action("submit", "draft", "pending"),  # server-created flow: the one confirmation
        Action("confirm", "pending", "ready"),
        Action("reject", "pending", "failed"),
        Action("archive", "ready", "archived"),
        Action("cancel", ["draft", "pending", "ready"], "cancelled"),
    ],
    terminal=["failed", "cancelled", "archived"],
)
BOOKINGS = ResourceTable(bookings, MACHINE)
_OPEN = ("draft", "pending")  # states in which the create action has no final answer yet


class BookingIn(BaseModel):
    restaurant: Annotated[str, Field(min_length=1, max_length=255)]
    time: JsonDatetime
    party_size: Annotated[JsonInt, Field(gt=0, le=1000)]
    name: Annotated[str, Field(min_length=1, max_length=255)]


class BookingPatch(BaseModel):
    time: JsonDatetime | None = None
    party_size: Annotated[JsonInt | None, Field(gt=0, le=1000)] = None
    name: Annotated[str | None, Field(min_length=1, max_length=255)] = None


Code = Annotated[str, Path(min_length=1, max_length=128, pattern="^[A-Za-z0-9_.-]+$")]


def fingerprint(body: BookingIn) -> str:
    canonical = {**body.model_dump(mode="json"), "time": body.time.isoformat()}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def booking_view(row: Any) -> dict[str, Any]:
    """The representation, with the status of each action (pending / succeeded / failed)."""
    create: dict[str, Any] = {"status": "succeeded"}
    if row.state in _OPEN:
        create = {"status": "pending"}
    elif row.confirmed_at is None:
        create = {"status": "failed", "problem": row.problem or _problem("cancelled")}
    actions: dict[str, Any] = {"create": create}
    if row.state == "cancelled":
        actions["cancel"] = {"status": "succeeded"}
    return {
        "code": row.code,
        "restaurant": row.restaurant,
        "time": row.time.isoformat() if row.time else None,
        "party_size": row.party_size,
        "name": row.name,
        "state": row.state,
        "version": row.version,
        "actions": actions,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "links": {"self": f"/bookings/{row.code}", "history": f"/bookings/{row.code}/history"},
    }


def _problem(code: str, detail: str = "") -> dict[str, Any]:
    problem = {"type": f"https://convergent.dev/problems/{code}", "title": code, "status": 422}
    if detail:
        problem["detail"] = detail
    return problem


# confirmation -------------------------------------------------------------------------------


async def confirm_booking(conn: AsyncConnection, booking_id: Any) -> str | None:
    """Decide a pending booking (ready or failed); returns the new state, None if not pending."""
    resource = BOOKINGS
    row = await resource.get(conn, booking_id)
    if row is None or row.state != "pending":
        return None
    now = store_of(conn).clock.now()
    reason = None
    if row.party_size > MAX_PARTY:
        reason = f"parties larger than {MAX_PARTY} cannot be booked"
    elif row.time <= now:
        reason = "the booking time has passed"
    try:
        if reason:
            row = await resource.transition(
                conn,
                booking_id,
                "reject",
                expected_version=row.version,
                values={"problem": _problem("booking-rejected", reason)},
                actor="confirmer",
                cause=reason,
            )
        else:
            row = await resource.transition(
                conn,
                booking_id,
                "confirm",
                expected_version=row.version,
                values={"confirmed_at": now},
                actor="confirmer",
            )
    except InvalidTransition:  # another confirmer (or a cancel) got there first
        return None
    await announce(conn, "booking", row, row.code)
    return str(row.state)


async def confirm_pending(store: Store, limit: int = 100) -> int:
    """Confirm pending bookings and archive past ones; returns how many were handled."""
    c = bookings.c
    yesterday = store.clock.now() - timedelta(days=1)
    async with store.read() as conn:
        pending = (
            await conn.execute(sa.select(c.id).where(c.state == "pending").limit(limit))
        ).scalars()
        pending_ids = list(pending)
        past = (
            await conn.execute(
                sa.select(c.id).where(c.state == "ready", c.time < yesterday).limit(limit)
            )
        ).scalars()
        past_ids = list(past)
    done = 0
    for booking_id in pending_ids:
        with contextlib.suppress(StaleVersion):
            async with store.begin() as conn:
                if await confirm_booking(conn, booking_id) is not None:
                    done += 1
    for booking_id in past_ids:
        with contextlib.suppress(InvalidTransition):
            async with store.begin() as conn:
                row = await BOOKINGS.transition(conn, booking_id, "archive", actor="archiver")
                await announce(conn, "booking", row, row.code)
                done += 1
    return done


async def run_confirmer(store: Store, stop: asyncio.Event, poll_interval: float = 1.0) -> None:
    """Confirm bookings until ``stop``: woken by booking changes, polling as a fallback."""
    loop = asyncio.get_running_loop()
    prefix = f"{BOOKINGS.resource_type}:"
    async with store.notifier.subscribe(CHANNEL) as sub:
        while not stop.is_set():
            try:
                await confirm_pending(store)
            except Exception:  # keep confirming; the next round retries
                log.exception("booking confirmer round failed")
            poll_at = loop.time() + poll_interval
            while (left := poll_at - loop.time()) > 0:  # other resources' changes do not wake us
                if await sub.wait(left) and any(p.startswith(prefix) for p in sub.drain()):
                    break


async def _start_lifecycle(conn: AsyncConnection, row: Any) -> None:
    """Confirm the booking, then archive it by timer: a durable run started with the booking."""
    # by name: the workflow (convergent_shop.workflows) imports this module
    await start(conn, get_workflow(BOOKING_LIFECYCLE), str(row.id), key=f"booking:{row.id}")


# HTTP ---------------------------------------------------------------------------------------

router = APIRouter(tags=["bookings"], dependencies=[AUTHENTICATED])


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _client(request: Request) -> str:
    return client_id(request)  # codes are scoped to the key's id


async def _by_code(conn: AsyncConnection, client: str, code: str) -> Any:
    c = bookings.c
    row = (await conn.execute(bookings.select().where(c.client == client, c.code == code))).first()
    if row is None:
        raise NotFound(f"no booking {code}")
    return row


def _answer(response: Response, row: Any, *, created: bool) -> dict[str, Any]:
    response.headers["ETag"] = etag(row.version)
    if row.state in _OPEN:
        response.status_code = 202
        response.headers.update(accepted_headers(f"/bookings/{row.code}"))
    else:
        response.status_code = 201 if created else 200
        response.headers["Location"] = f"/bookings/{row.code}"
    return booking_view(row)


async def _wait_final(request: Request, response: Response, row: Any) -> Any:
    store = _store(request)
    wait = requested_wait(request, limit=BOOKING_SLA)
    seconds = BOOKING_SLA if wait is None else wait
    if row.state not in _OPEN or seconds <= 0:
        if wait is not None:
            response.headers.update(preference_applied(seconds))
        return row
    client, code = row.client, row.code

    async def load(conn: AsyncConnection) -> Any:
        return await _by_code(conn, client, code)

    row = await wait_for(
        store, BOOKINGS.resource_type, row.id, load, lambda r: r.state not in _OPEN, timeout=seconds
    )
    if wait is not None:
        response.headers.update(preference_applied(seconds))
    return row


@router.put("/bookings/{code}", status_code=201)
async def put_booking(
    code: Code, body: BookingIn, request: Request, response: Response
) -> dict[str, Any]:
    """Create the booking once (the code is the idempotency key) or return it."""
    store, client = _store(request), _client(request)
    resource = BOOKINGS
    digest = fingerprint(body)
    async with store.begin() as conn:
        c = bookings.c
        row = (
            await conn.execute(bookings.select().where(c.client == client, c.code == code))
        ).first()
        evaluate_request(request, None if row is None else row.version)  # If-None-Match: *
        created = False
        if row is None:
            row = await resource.create(
                conn,
                {"client": client, "code": code, "fingerprint": digest, **body.model_dump()},
                actor=actor(request),
                conflict_columns=["client", "code"],
            )
            created = row is not None
            if row is None:  # a concurrent PUT with the same code won
                row = await _by_code(conn, client, code)
            else:
                await announce(conn, "booking", row, code)
                await _start_lifecycle(conn, row)
    if row.fingerprint != digest:
        raise IdempotencyKeyMismatch(f"booking {code} was made with a different request")
    row = await _wait_final(request, response, row)
    return _answer(response, row, created=created)


@router.get("/bookings/{code}")
async def get_booking(code: Code, request: Request, response: Response) -> Any:
    async with _store(request).read() as conn:
        row = await _by_code(conn, _client(request), code)
    if evaluate_request(request, row.version).not_modified:
        return Response(status_code=304, headers={"ETag": etag(row.version)})
    response.headers["ETag"] = etag(row.version)
    return booking_view(row)


@router.patch("/bookings/{code}", openapi_extra=header_parameters("If-Match", required=False))
async def patch_booking(
    code: Code, body: BookingPatch, request: Request, response: Response
) -> dict[str, Any]:
    """Change time, party size or name; needs If-Match (428 without, 412 when stale)."""
    store = _store(request)
    values = body.model_dump(exclude_unset=True, exclude_none=True)
    async with store.begin() as conn:
        row = await _by_code(conn, _client(request), code)
        expected = evaluate_request(request, row.version, require_if_match=True).expected_version
        if values:
            row = await BOOKINGS.update_fields(
                conn,
                row.id,
                values,
                expected_version=expected,
                states=["draft", "pending", "ready"],
                actor=actor(request),
                metadata={"fields": sorted(values)},
            )
            await announce(conn, "booking", row, code)  # a new version: tell receivers
    response.headers["ETag"] = etag(row.version)
    return booking_view(row)


@router.delete("/bookings/{code}")
async def cancel_booking(code: Code, request: Request, response: Response) -> dict[str, Any]:
    """Cancel (a transition, the row stays); repeating it answers the same."""
    store = _store(request)
    async with store.begin() as conn:
        row = await _by_code(conn, _client(request), code)
        expected = evaluate_request(request, row.version).expected_version
        if expected is not None and row.state != "cancelled":
            row = await BOOKINGS.transition(
                conn, row.id, "cancel", expected_version=expected, actor=actor(request)
            )
            cancelled = True
        else:
            row, cancelled = await confirm_once(
                BOOKINGS, conn, row.id, action="cancel", actor=actor(request)
            )
        if cancelled:  # a repeated cancel changed nothing, so it announces nothing
            await announce(conn, "booking", row, code)
    response.headers["ETag"] = etag(row.version)
    return booking_view(row)


@router.get("/bookings/{code}/history")
async def booking_history(code: Code, request: Request) -> dict[str, Any]:
    async with _store(request).read() as conn:
        row = await _by_code(conn, _client(request), code)
        entries = await BOOKINGS.history(conn, row.id)
    return {"code": code, "items": [e.to_dict() for e in entries]}


# server-created flow --------------------------------------------------------------------------


@router.post("/bookings", status_code=201)
async def draft_booking(body: BookingIn, request: Request, response: Response) -> dict[str, Any]:
    """Hand out a server-created code for a draft; confirm it with PUT .../confirm."""
    store, client = _store(request), _client(request)
    code = "srv-" + secrets.token_urlsafe(12)
    async with store.begin() as conn:
        row = await BOOKINGS.create(
            conn,
            {"client": client, "code": code, "fingerprint": fingerprint(body), **body.model_dump()},
            state="draft",
            actor=actor(request),
        )
        assert row is not None
        await announce(conn, "booking", row, code)
    response.headers["Location"] = f"/bookings/{code}"
    response.headers["ETag"] = etag(row.version)
    return booking_view(row)


@router.put("/bookings/{code}/confirm")
async def submit_booking(code: Code, request: Request, response: Response) -> dict[str, Any]:
    """Submit a draft exactly once; repeats are no-ops with the same answer."""
    store = _store(request)
    async with store.begin() as conn:
        row = await _by_code(conn, _client(request), code)
        row, submitted = await confirm_once(BOOKINGS, conn, row.id, action="submit")
        if submitted:
            await announce(conn, "booking", row, code)
            await _start_lifecycle(conn, row)
    row = await _wait_final(request, response, row)
    return _answer(response, row, created=False)
