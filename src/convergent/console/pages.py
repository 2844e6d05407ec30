"""The console's pages (read only; actions live in `convergent.console.app`)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from convergent.console.charts import Series, chart
from convergent.console.health import check_broker, check_database
from convergent.console.queries import dead_letters as letters_q
from convergent.console.queries import idempotency as keys_q
from convergent.console.queries import messages as messages_q
from convergent.console.queries import overview as overview_q
from convergent.console.queries import runs as runs_q
from convergent.console.queries import schedules as schedules_q
from convergent.console.queries import webhooks as webhooks_q
from convergent.console.web import render
from convergent.errors import NotFound
from convergent.outbox.dlq import get_dead_letter
from convergent.store import Store

__all__ = ["AGES", "router"]

router = APIRouter()

#: the Runs page's age filter
AGES = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
}


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"{raw!r} is not a {what} id") from None


async def _overview_values(request: Request) -> dict[str, Any]:
    store = _store(request)
    now = store.clock.now()
    async with store.read() as conn:
        data = await overview_q.overview(conn, now=now)
        parked, _keys = await messages_q.parked_keys(conn)
    labels = [b.start.strftime("%H:%M") for b in data.buckets]
    throughput = chart(
        "Throughput (runs per 2 minutes)",
        labels,
        [
            Series("started", [b.started for b in data.buckets]),
            Series("completed", [b.completed for b in data.buckets]),
        ],
        y_label="runs",
        x_label="time (UTC), by when the run started",
    )
    consistency = chart(
        "Time to consistency (start to completed)",
        labels,
        [
            Series("p50", [b.p50_seconds for b in data.buckets]),
            Series("p95", [b.p95_seconds for b in data.buckets]),
        ],
        y_label="seconds",
        x_label="time (UTC), by when the run started",
        kind="lines",
    )
    health = [await check_database(store), await check_broker(request.app.state.broker_url)]
    return {
        "data": data,
        "now": now,
        "throughput": throughput,
        "consistency": consistency,
        "health": health,
        "sources": letters_q.SOURCES,
        "parked": parked,
        "refresh": f"{request.app.state.refresh_seconds:g}",
    }


@router.get("/", include_in_schema=False)
async def overview_page(request: Request) -> Response:
    return render(request, "overview.html", page="overview", **await _overview_values(request))


@router.get("/overview/live", include_in_schema=False)
async def overview_live(request: Request) -> Response:
    """The panels alone: the Overview page polls this every few seconds."""
    return render(request, "_overview_panels.html", **await _overview_values(request))


@router.get("/runs", include_in_schema=False)
async def runs_page(
    request: Request,
    workflow: str = "",
    status: str = "",
    queue: str = "",
    age: str = "",
    key: str = "",
    q: str = "",
    cursor: str = "",
) -> Response:
    store = _store(request)
    f = runs_q.RunFilter(
        workflow=workflow or None,
        status=status if status in runs_q.RUN_STATES else None,
        queue=queue or None,
        max_age=AGES.get(age),
        key=key or None,
        q=q or None,
    )
    async with store.read() as conn:
        page = await runs_q.find_runs(conn, f, now=store.clock.now(), cursor=cursor or None)
    params = {"workflow": workflow, "status": status, "queue": queue, "age": age, "key": key}
    params["q"] = q
    return render(
        request,
        "runs.html",
        page="runs",
        runs=page,
        f=params,
        states=runs_q.RUN_STATES,
        ages=list(AGES),
    )


@router.get("/runs/{run_id}", include_in_schema=False)
async def run_page(request: Request, run_id: str) -> Response:
    async with _store(request).read() as conn:
        detail = await runs_q.run_detail(conn, _uuid(run_id, "run"))
    return render(request, "run.html", page="runs", d=detail, now=_store(request).clock.now())


@router.get("/messages", include_in_schema=False)
async def messages_page(request: Request) -> Response:
    store = _store(request)
    async with store.read() as conn:
        data = await messages_q.messages(conn)
    return render(request, "messages.html", page="messages", m=data, now=store.clock.now())


@router.get("/dead-letters", include_in_schema=False)
async def letters_page(
    request: Request,
    source: str = "",
    status: str = "dead",
    name: str = "",
    key: str = "",
    cursor: str = "",
) -> Response:
    f = letters_q.LetterFilter(
        source=source if source in letters_q.SOURCES else None,
        status=status or None,
        name=name or None,
        key=key or None,
    )
    async with _store(request).read() as conn:
        page = await letters_q.find_letters(conn, f, cursor=cursor or None)
    return render(
        request,
        "dead_letters.html",
        page="dead-letters",
        letters=page,
        f={"source": source, "status": status, "name": name, "key": key},
        sources=letters_q.SOURCES,
    )


@router.get("/dead-letters/{letter_id}", include_in_schema=False)
async def letter_page(request: Request, letter_id: str) -> Response:
    async with _store(request).read() as conn:
        letter = await get_dead_letter(conn, letter_id)
        history = await runs_q.actions_on(conn, "dead_letter", str(letter.id))
    return render(request, "dead_letter.html", page="dead-letters", l=letter, actions=history)


@router.get("/webhooks", include_in_schema=False)
async def webhooks_page(request: Request) -> Response:
    async with _store(request).read() as conn:
        endpoints = await webhooks_q.endpoints_health(conn)
    return render(
        request,
        "webhooks.html",
        page="webhooks",
        endpoints=endpoints,
        now=_store(request).clock.now(),
    )


@router.get("/webhooks/{endpoint_id}", include_in_schema=False)
async def endpoint_page(request: Request, endpoint_id: str, cursor: str = "") -> Response:
    async with _store(request).read() as conn:
        endpoint, attempts = await webhooks_q.endpoint_attempts(
            conn, _uuid(endpoint_id, "endpoint"), cursor=cursor or None
        )
        history = await runs_q.actions_on(conn, "webhook_endpoint", str(endpoint.id))
    return render(
        request,
        "webhook.html",
        page="webhooks",
        e=endpoint,
        attempts=attempts,
        actions=history,
    )


@router.get("/idempotency", include_in_schema=False)
async def keys_page(request: Request, cursor: str = "") -> Response:
    store = _store(request)
    async with store.read() as conn:
        in_flight = await keys_q.keys_in_flight(conn)
        recent = await keys_q.recent_keys(conn, cursor=cursor or None)
    return render(
        request,
        "idempotency.html",
        page="idempotency",
        in_flight=in_flight,
        recent=recent,
        now=store.clock.now(),
    )


@router.get("/schedules", include_in_schema=False)
async def schedules_page(request: Request) -> Response:
    from convergent.workflows.schedules import list_schedules

    store = _store(request)
    declared = await list_schedules(store)
    async with store.read() as conn:
        loads = await schedules_q.fleet_queues(conn)
    return render(
        request,
        "schedules.html",
        page="schedules",
        schedules=declared,
        queues=loads,
        now=store.clock.now(),
    )
