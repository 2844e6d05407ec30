"""The reference shop as one ASGI app (`convergent serve`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from convergent.http.problem import install_problem_handlers
from convergent.shop import customers, orders, readmodels
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
        async with readmodels.messaging_loops(store, broker_url):  # CONVERGENT_SHOP_LOOPS=0: off
            yield

    app = FastAPI(title="convergent shop", version="0.1.0", lifespan=lifespan)
    app.state.store = store
    app.state.broker_url = broker_url
    install_problem_handlers(app)
    app.include_router(orders.router)
    app.include_router(customers.router)
    app.include_router(readmodels.router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        await store.ping()
        return {"status": "ok", "database": store.dialect}

    return app
