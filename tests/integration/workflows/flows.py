"""Workflows used by the tests, importable by worker subprocesses (``--import`` this module).

Steps write their effect to ``wf_effects`` keyed by their idempotency key (a second write with
the same key is a no-op, like any idempotent API) and call a loopback payment provider.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import sqlalchemy as sa

from convergent.errors import PermanentError
from convergent.store import Store
from convergent.workflows import Saga, StepContext, WorkflowContext, step, workflow
from convergent.workflows.http import raise_for_status

user_metadata = sa.MetaData()
effects = sa.Table(
    "wf_effects",
    user_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(255), nullable=False, unique=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("step", sa.String(64), nullable=False),
)

_stores: dict[str, Store] = {}


def _store() -> Store:
    url = os.environ["WF_TEST_DATABASE_URL"]
    if url not in _stores:
        _stores[url] = Store(url)
    return _stores[url]


def _provider() -> str:
    return os.environ["WF_TEST_PROVIDER_URL"]


async def record_effect(ctx: StepContext, name: str) -> None:
    store = _store()
    async with store.begin() as conn:
        await conn.execute(
            store.sql.insert(effects)
            .values(key=ctx.idempotency_key, run_id=str(ctx.run_id), step=name)
            .on_conflict_do_nothing(index_elements=["key"])
        )


async def call_provider(ctx: StepContext, path: str, order_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=_provider(), timeout=5) as client:
        response = await client.post(
            path, json={"order": order_id}, headers={"Idempotency-Key": ctx.idempotency_key}
        )
    raise_for_status(response)
    body: dict[str, Any] = response.json()
    return body


@step
async def reserve(ctx: StepContext, order_id: str, fail_ship: bool) -> str:
    await record_effect(ctx, "reserve")
    return f"reservation-{order_id}"


@step
async def charge(ctx: StepContext, order_id: str, fail_ship: bool) -> dict[str, Any]:
    body = await call_provider(ctx, "/charge", order_id)
    await record_effect(ctx, "charge")
    return body


@charge.reconciler
async def find_charge(ctx: StepContext, order_id: str, fail_ship: bool) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=_provider(), timeout=5) as client:
        response = await client.get(f"/charges/{ctx.idempotency_key}")
    if response.status_code == 404:
        return None
    raise_for_status(response)
    body: dict[str, Any] = response.json()
    await record_effect(ctx, "charge")  # the effect's own write is idempotent by key
    return body


@step
async def ship(ctx: StepContext, order_id: str, fail_ship: bool) -> str:
    if fail_ship:
        raise PermanentError("carrier refused the parcel")
    await record_effect(ctx, "ship")
    return "shipped"


@step
async def refund(ctx: StepContext, order_id: str, fail_ship: bool) -> None:
    await call_provider(ctx, "/refund", order_id)
    await record_effect(ctx, "refund")


@step
async def release(ctx: StepContext, order_id: str, fail_ship: bool) -> None:
    await record_effect(ctx, "release")


@workflow(name="tests.order")
async def order(ctx: WorkflowContext, order_id: str, fail_ship: bool = False) -> str:
    async with Saga() as saga:
        await saga.step(reserve, order_id, fail_ship, compensate=release)
        await saga.step(charge, order_id, fail_ship, compensate=refund)
        return await saga.step(ship, order_id, fail_ship)


@step
async def ship_when_fixed(ctx: StepContext, order_id: str) -> str:
    if os.environ.get("WF_TEST_BROKEN") == "1":  # the bug a later deploy fixes
        raise PermanentError("the carrier rejects our labels")
    await record_effect(ctx, "ship")
    return "shipped"


@step(name="charge_last")
async def charge_last(ctx: StepContext, order_id: str) -> dict[str, Any]:
    body = await call_provider(ctx, "/charge", order_id)
    await record_effect(ctx, "charge")
    return body


@charge_last.reconciler
async def find_last_charge(ctx: StepContext, order_id: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=_provider(), timeout=5) as client:
        response = await client.get(f"/charges/{ctx.idempotency_key}")
    if response.status_code == 404:
        return None
    raise_for_status(response)
    body: dict[str, Any] = response.json()
    await record_effect(ctx, "charge")
    return body


@workflow(name="tests.fixable")
async def fixable(ctx: WorkflowContext, order_id: str) -> str:
    """Fails at shipping until the fix is deployed; resumed, it ships and then charges."""
    await reserve(order_id, False)
    shipped = await ship_when_fixed(order_id)
    await charge_last(order_id)
    return shipped
