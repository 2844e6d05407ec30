"""The reference shop as one ASGI app (`convergent serve`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from convergent.auth import api_key_principal, require_admin
from convergent.console import create_console
from convergent.http.admin import admin_router
from convergent.http.guard import RequestGuard
from convergent.http.middleware import IdempotencyMiddleware
from convergent.http.openapi import declare_protocol
from convergent.http.problem import install_problem_handlers
from convergent.http.tracing import TracingMiddleware
from convergent.loops import run_loops
from convergent.outbox.asyncapi import asyncapi_document
from convergent.store import Store
from convergent_shop import (  # noqa: F401 (modules that only declare tables are imported for them)
    bookings,
    clients,
    customers,
    inventory,
    notifications,
    orders,
    payments,
    readmodels,
    shipping,
    trading,
    webhooks,
    workflows,  # registers the saga and the booking lifecycle, which routes start by name
)
from convergent_shop import settings as shop_settings
from convergent_shop.db import create_shop_tables
from convergent_shop.loops import loops_enabled, shop_loops
from convergent_shop.workflows import close_psp_clients

__all__ = ["create_app"]


def create_app(
    store: Store,
    *,
    broker_url: str | None = None,
    migrate: bool = True,
    loops: bool | None = None,
) -> FastAPI:
    """Build the shop on ``store``; with ``migrate`` the tables are created at start-up.

    ``loops`` runs the background work (workflow worker, relay, consumers, webhook dispatcher,
    key sweeper, metrics sampler) inside the app; None reads ``CONVERGENT_SHOP_LOOPS`` (default on).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await store.migrate()
            async with store.migration() as conn:  # one process at a time creates them
                await create_shop_tables(conn)
        else:  # the operator migrates: refuse to serve on tables this version cannot use
            await store.check_schema()
        background = shop_loops(store, broker_url) if loops_enabled(loops) else []
        stop = asyncio.Event()
        task = asyncio.create_task(run_loops(background, stop))
        try:
            yield
        finally:
            stop.set()
            await task
            await close_psp_clients()

    app = FastAPI(title="convergent shop", version="0.1.0", lifespan=lifespan)
    app.state.store = store
    app.state.broker_url = broker_url
    install_problem_handlers(app)
    declare_protocol(app)
    app.include_router(orders.router)
    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        routes=[("POST", "/orders")],
        principal=api_key_principal,  # keys are scoped to the API key's id
    )
    # bad bodies and paths are refused before anything else reads them
    app.add_middleware(RequestGuard, other_bodies=["/console"])
    app.add_middleware(TracingMiddleware)  # outermost: the request's span holds all the rest
    app.include_router(bookings.router)
    app.include_router(trading.router)
    app.include_router(webhooks.router)
    app.include_router(notifications.router)
    app.include_router(customers.router)
    app.include_router(readmodels.router)
    # the operator console, for admin API keys only (docs/console.md)
    app.mount("/console", create_console(store, broker_url=broker_url))
    # the admin API the console, the CLI and scripts share: runs, dead letters, schedules
    # (admin keys only; documented in docs/workflows.md, kept out of the public OpenAPI)
    app.include_router(admin_router(), prefix="/admin", include_in_schema=False)

    guard = [Depends(require_admin)] if shop_settings.load().metrics_admin_only else []

    @app.get("/metrics", tags=["ops"], include_in_schema=False, dependencies=guard)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/asyncapi.json", tags=["ops"])
    async def asyncapi() -> dict[str, Any]:
        """The shop's topics as an AsyncAPI 3.0 document (the `convergent asyncapi` output)."""
        return asyncapi_document(
            title=app.title,
            version=app.version,
            description="Events and entity topics of the reference shop.",
            broker_url=broker_url,
        )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        await store.ping()
        return {"status": "ok", "database": store.sql.name}

    return app
