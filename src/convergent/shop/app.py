"""The reference shop as one ASGI app (`convergent serve`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from convergent.http.middleware import IdempotencyMiddleware, header_principal
from convergent.http.problem import install_problem_handlers
from convergent.shop import (  # noqa: F401 (modules that only declare tables are imported for them)
    bookings,
    customers,
    inventory,
    notifications,
    orders,
    payments,
    readmodels,
    shipping,
    trading,
    webhooks,
)
from convergent.shop.db import create_shop_tables
from convergent.store import Store

__all__ = ["create_app"]


def create_app(store: Store, *, broker_url: str | None = None, migrate: bool = True) -> FastAPI:
    """Build the shop on ``store``; with ``migrate`` the tables are created at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if migrate:
            await store.migrate()
            async with store.begin() as conn:
                await create_shop_tables(conn)
        stop = asyncio.Event()
        confirmer = None
        if bookings.confirmer_enabled():
            confirmer = asyncio.create_task(bookings.run_confirmer(store, stop))
        async with (
            webhooks.run_dispatcher(store),
            readmodels.messaging_loops(store, broker_url),  # CONVERGENT_SHOP_LOOPS=0: off
        ):
            yield
        stop.set()
        if confirmer is not None:
            confirmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await confirmer

    app = FastAPI(title="convergent shop", version="0.1.0", lifespan=lifespan)
    app.state.store = store
    app.state.broker_url = broker_url
    install_problem_handlers(app)
    app.include_router(orders.router)
    app.add_middleware(
        IdempotencyMiddleware,
        store=store,
        routes=[("POST", "/orders")],
        principal=header_principal("X-Api-Key"),
    )
    app.include_router(bookings.router)
    app.include_router(trading.router)
    app.include_router(webhooks.router)
    app.include_router(notifications.router)
    app.include_router(customers.router)
    app.include_router(readmodels.router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        await store.ping()
        return {"status": "ok", "database": store.dialect}

    return app
