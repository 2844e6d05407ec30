"""The console over HTTP in process (mounted at /console as `serve` does): login, refusals,
confirmation, and every page answering with what the store holds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from convergent.auth import create_key
from convergent.console import ACTIONS, create_console
from convergent.store import Store
from convergent.workflows import Workflow, status, submit

PAGES = [
    "/",
    "/overview/live",
    "/runs",
    "/messages",
    "/dead-letters",
    "/webhooks",
    "/idempotency",
    "/schedules",
]


async def _noop(ctx: object) -> None:
    return None


WORKFLOW: Workflow[[], None] = Workflow(_noop, "console.test.app", "default")


@pytest.fixture
async def keys(store: Store) -> dict[str, str]:
    out = {}
    async with store.begin() as conn:
        for name, admin in (("admin", True), ("client", False)):
            _k, out[name] = await create_key(conn, name, admin=admin)
    return out


@pytest.fixture
async def http(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.mount("/console", create_console(store))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        yield client


@pytest.mark.parametrize("path", [*PAGES, "/runs/01a2300d-b984-7073-bf11-7dabe396be0c"])
async def test_every_page_refuses_anyone_without_an_admin_key(
    http: httpx.AsyncClient, keys: dict[str, str], path: str
) -> None:
    page = await http.get("/console" + path, headers={"Accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"].startswith("/console/login?next=%2Fconsole")
    api = await http.get("/console" + path)
    assert api.status_code == 401
    assert api.headers["content-type"] == "application/problem+json"
    client = await http.get("/console" + path, headers={"X-Api-Key": keys["client"]})
    assert client.status_code == 403


async def test_actions_refuse_anyone_without_an_admin_key(
    http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    form = {"target": "x", "confirm": "yes"}
    for name in ACTIONS:  # every action, nothing done without an admin key
        assert (await http.post(f"/console/actions/{name}", data=form)).status_code == 401
        assert (await http.get(f"/console/actions/{name}?target=x")).status_code == 401
    with_client = await http.post(
        "/console/actions/run.cancel", data=form, headers={"X-Api-Key": keys["client"]}
    )
    assert with_client.status_code == 403
    assert (await http.get("/console/actions/run.cancel?target=x")).status_code == 401


async def test_login_sets_a_strict_httponly_cookie_and_goes_where_it_was_asked(
    http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    wrong = await http.post("/console/login", data={"key": keys["client"], "next": ""})
    assert wrong.status_code == 401
    assert "not an admin key" in wrong.text
    ok = await http.post("/console/login", data={"key": keys["admin"], "next": "/console/runs"})
    assert ok.status_code == 303
    assert ok.headers["location"] == "/console/runs"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/console/" in cookie
    assert (await http.get("/console/runs")).status_code == 200  # the cookie now
    elsewhere = await http.post(
        "/console/login", data={"key": keys["admin"], "next": "https://evil.test/"}
    )
    assert elsewhere.headers["location"] == "/console/"
    out = await http.post("/console/logout")
    assert out.status_code == 303
    http.cookies.clear()
    assert (await http.get("/console/runs")).status_code == 401


async def test_an_action_needs_its_confirmation_and_the_consoles_own_origin(
    store: Store, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    run_id = await submit(store, WORKFLOW, key="c-1")
    admin = {"X-Api-Key": keys["admin"]}
    confirm = await http.get(
        f"/console/actions/run.cancel?target={run_id}&back=/console/runs", headers=admin
    )
    assert confirm.status_code == 200
    assert f"Cancel run {run_id}?" in confirm.text
    unconfirmed = await http.post(
        "/console/actions/run.cancel", data={"target": str(run_id)}, headers=admin
    )
    assert unconfirmed.status_code == 400
    forged = await http.post(
        "/console/actions/run.cancel",
        data={"target": str(run_id), "confirm": "yes"},
        headers={**admin, "Origin": "https://evil.test"},
    )
    assert forged.status_code == 403
    assert (await status(store, run_id)).status == "pending"
    done = await http.post(
        "/console/actions/run.cancel",
        data={"target": str(run_id), "confirm": "yes", "back": "/console/runs"},
        headers={**admin, "Accept": "text/html", "Origin": "http://shop.test"},
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/console/runs?notice=cancel+requested")
    assert (await status(store, run_id)).status == "cancelled"
    page = await http.get(f"/console/runs/{run_id}", headers=admin)
    assert "run.cancel" in page.text
    assert "admin" in page.text


async def test_every_page_answers_with_the_store_content(
    store: Store, http: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    run_id = await submit(store, WORKFLOW, key="order-77")
    admin = {"X-Api-Key": keys["admin"]}
    for path in PAGES:
        page = await http.get("/console" + path, headers=admin)
        assert page.status_code == 200, path
        assert "text/html" in page.headers["content-type"]
    found = await http.get("/console/runs?q=order-77", headers=admin)
    assert str(run_id) in found.text
    overview = await http.get("/console/", headers=admin)
    assert "<svg" in overview.text
    assert "time (UTC), by when the run started" in overview.text
    assert 'hx-trigger="every 5s"' in overview.text
    assert (await http.get("/console/static/htmx.min.js")).status_code == 200
    forged = await http.get("/console/runs?cursor=bm90LWEtY3Vyc29y", headers=admin)
    assert forged.status_code == 400
    assert forged.json()["type"].endswith("/invalid-cursor")
    missing = await http.get("/console/runs/not-a-uuid", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
