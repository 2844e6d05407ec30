"""The admin router: run and dead-letter actions over HTTP, for admin keys only, recorded with
the key's name; bad input answers problem+json naming the fix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from convergent.auth import create_key, forget_cached
from convergent.errors import PermanentError, RunFailed
from convergent.http.admin import admin_router
from convergent.http.problem import install_problem_handlers
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import dead_letters
from convergent.workflows import StepContext, WorkflowContext, result, step, submit, workflow
from tests.integration.workflows.conftest import running

fixed = False


@step
async def flaky_ship(ctx: StepContext) -> str:
    if not fixed:
        raise PermanentError("label printer offline")
    return "shipped"


@workflow(name="tests.admin.ship")
async def ship(ctx: WorkflowContext) -> str:
    return await flaky_ship()


@pytest.fixture
async def http(mstore: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.store = mstore
    install_problem_handlers(app)
    app.include_router(admin_router(), prefix="/admin")
    async with mstore.begin() as conn:
        _, admin = await create_key(conn, "ops-alice", admin=True)
        _, plain = await create_key(conn, "shop")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-Api-Key": admin}
    ) as client:
        client.headers["X-Plain-Key"] = plain
        yield client
    forget_cached(mstore)


async def test_an_admin_resumes_a_failed_run_and_it_is_in_its_history(
    mstore: Store, http: httpx.AsyncClient
) -> None:
    global fixed
    fixed = False
    run_id = await submit(mstore, ship)
    async with running(mstore):
        with pytest.raises(RunFailed):
            await result(mstore, run_id, wait=10)
        busy = await http.post(f"/admin/runs/{uuid.uuid4()}/resume")
        assert busy.status_code == 404
        assert busy.headers["content-type"] == "application/problem+json"
        plain = {"X-Api-Key": http.headers["X-Plain-Key"]}
        assert (await http.post(f"/admin/runs/{run_id}/resume", headers=plain)).status_code == 403
        fixed = True
        resumed = await http.post(f"/admin/runs/{run_id}/resume", json={"from_step": 1})
        assert resumed.status_code == 202, resumed.text
        assert resumed.json() == {"run_id": str(run_id), "resumed_from": 1}
        assert await result(mstore, run_id, wait=10) == "shipped"
    again = await http.post(f"/admin/runs/{run_id}/resume")
    assert again.status_code == 409
    assert "completed" in again.json()["detail"]
    shown = (await http.get(f"/admin/runs/{run_id}")).json()
    assert shown["run"]["status"] == "completed"
    assert [(h["actor"], h["action"]) for h in shown["history"]] == [("ops-alice", "run.resume")]
    cancel = await http.post(f"/admin/runs/{run_id}/cancel")
    assert cancel.status_code == 409
    retry = await http.post(f"/admin/runs/{run_id}/retry-step")
    assert retry.status_code == 409


async def test_dead_letters_over_http(mstore: Store, http: httpx.AsyncClient) -> None:
    assert (await http.get("/admin/dead-letters")).json() == []
    missing = await http.get(f"/admin/dead-letters/{uuid.uuid4()}")
    assert missing.status_code == 404
    needs_filter = await http.post("/admin/dead-letters/retry", json={})
    assert needs_filter.status_code == 422
    bulk = await http.post("/admin/dead-letters/discard", json={"source": "outbox"})
    assert bulk.json() == {"done": [], "failed": {}}
    letter_id = uuid7()
    async with mstore.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=letter_id,
                source="outbox",
                source_ref=str(uuid7()),
                name="orders",
                key="k1",
                payload={"topic": "orders"},
                reason="broker refused",
                attempts=8,
                created_at=mstore.clock.now(),
            )
        )
    listed = (await http.get("/admin/dead-letters", params={"source": "outbox"})).json()
    assert [(x["id"], x["reason"], x["attempts"]) for x in listed] == [
        (str(letter_id), "broker refused", 8)
    ]
    shown = (await http.get(f"/admin/dead-letters/{letter_id}")).json()
    assert shown["payload"] == {"topic": "orders"}
    gone = await http.post(f"/admin/dead-letters/{letter_id}/discard")
    assert gone.json() == {"id": str(letter_id), "status": "discarded"}
    twice = await http.post(f"/admin/dead-letters/{letter_id}/retry")
    assert twice.status_code == 409
    assert "already discarded" in twice.json()["detail"]


async def test_the_console_resumes_a_run_and_records_who(mstore: Store) -> None:
    from convergent.auth import Principal
    from convergent.console import perform
    from convergent.workflows import history

    global fixed
    fixed = False
    run_id = await submit(mstore, ship)
    async with running(mstore):
        with pytest.raises(RunFailed):
            await result(mstore, run_id, wait=10)
        fixed = True
        who = Principal(uuid.uuid4(), "ops-bob", True)
        bad = await perform(mstore, who, "run.resume", str(run_id), {"from_step": "x"})
        assert not bad.ok
        assert "position" in bad.message
        done = await perform(mstore, who, "run.resume", str(run_id), {})
        assert done.ok, done.message
        assert await result(mstore, run_id, wait=10) == "shipped"
    entries = await history(mstore, run_id)
    assert [(e.actor, e.action, e.outcome) for e in entries] == [
        ("ops-bob", "run.resume", "failed"),
        ("ops-bob", "run.resume", "ok"),
    ]


async def test_the_console_run_page_offers_resume_for_a_failed_run(mstore: Store) -> None:
    from convergent.console import create_console

    global fixed
    fixed = False
    run_id = await submit(mstore, ship)
    async with running(mstore):
        with pytest.raises(RunFailed):
            await result(mstore, run_id, wait=10)
    async with mstore.begin() as conn:
        _, admin = await create_key(conn, "ops-carol", admin=True)
    app = FastAPI()
    app.mount("/console", create_console(mstore))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        page = await client.get(f"/console/runs/{run_id}", headers={"X-Api-Key": admin})
    assert page.status_code == 200
    assert "run.resume" in page.text
    assert "run.retry_step" not in page.text
    forget_cached(mstore)
