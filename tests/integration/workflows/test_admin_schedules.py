"""Schedules over the admin router: list, pause, resume, trigger, each recorded with the admin
key's name; an unknown schedule answers 404 problem+json naming the fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from convergent.auth import create_key, forget_cached
from convergent.clock import ManualClock
from convergent.http.admin import admin_router
from convergent.http.problem import install_problem_handlers
from convergent.store import Store
from convergent.store.schema import operator_actions
from convergent.workflows import WorkflowContext, workflow
from convergent.workflows.schedules import fire_due, schedule, sync_schedules


@workflow(name="tests.admin_schedules.report")
async def report(ctx: WorkflowContext) -> None:
    return None


hourly = schedule(report, every=3600, name="admin-hourly")


@pytest.fixture
async def http(mstore: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.store = mstore
    install_problem_handlers(app)
    app.include_router(admin_router(), prefix="/admin")
    async with mstore.begin() as conn:
        _, admin = await create_key(conn, "ops-bob", admin=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-Api-Key": admin}
    ) as client:
        yield client
    forget_cached(mstore)


async def test_an_admin_pauses_resumes_and_triggers_a_schedule(
    mstore: Store, clock: ManualClock, http: httpx.AsyncClient
) -> None:
    clock.set(datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    await sync_schedules(mstore, [hourly])
    listed = (await http.get("/admin/schedules")).json()
    assert [(s["name"], s["paused"]) for s in listed] == [("admin-hourly", False)]
    assert listed[0]["next_at"] == "2030-01-01T01:00:00+00:00"
    for verb in ("pause", "resume", "trigger"):
        answer = await http.post(f"/admin/schedules/admin-hourly/{verb}")
        assert answer.status_code == 202, answer.text
    assert await fire_due(mstore, [hourly]) == 1  # the trigger
    o = operator_actions.c
    async with mstore.read() as conn:
        rows = await conn.execute(
            sa.select(o.actor, o.action).where(o.target_kind == "schedule").order_by(o.at, o.id)
        )
        done = [(r.actor, r.action) for r in rows]
    assert done == [
        ("ops-bob", "schedule.pause"),
        ("ops-bob", "schedule.resume"),
        ("ops-bob", "schedule.trigger"),
    ]


async def test_an_unknown_schedule_is_a_404_naming_the_fix(http: httpx.AsyncClient) -> None:
    answer = await http.post("/admin/schedules/nope/pause")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "convergent schedules list" in answer.json()["detail"]
    assert (await http.post("/admin/schedules/nope/explode")).status_code == 404
