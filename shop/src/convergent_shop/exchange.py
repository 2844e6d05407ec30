"""A fake exchange: accepts orders keyed by ``client_order_id`` and fills them in parts.

Each fill is POSTed to a callback URL as it happens, and some of those messages are lost or
sent twice on purpose. ``GET /orders/{client_order_id}`` always tells the whole truth, so a
client that polls can recover what it missed, and one that dedupes by ``fill_id`` never counts a
fill twice. State is kept in memory: the exchange is the outside world, not part of the shop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, FastAPI, Response
from pydantic import BaseModel, Field, model_validator

from convergent.errors import IdempotencyKeyMismatch, NotFound
from convergent.http.problem import install_problem_handlers

__all__ = ["Exchange", "ExchangeConfig", "ExchangeOrderIn", "create_exchange_app"]

_MARKET_PRICE = Decimal("100.00")


class ExchangeConfig(BaseModel):
    """Where fills go and how unreliable their delivery is."""

    callback_url: str | None = None
    lost_fill_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    duplicate_fill_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    fill_interval_ms: Annotated[int, Field(ge=0, le=60_000)] = 50
    max_parts: Annotated[int, Field(ge=1, le=20)] = 3
    seed: int | None = None


class ExchangeOrderIn(BaseModel):
    client_order_id: Annotated[str, Field(min_length=1, max_length=255)]
    symbol: Annotated[str, Field(min_length=1, max_length=16)] = "ACME"
    side: Literal["buy", "sell"] = "buy"
    type: Literal["limit", "market"] = "market"
    qty: Annotated[int, Field(gt=0, le=1_000_000)]
    price: Annotated[Decimal | None, Field(gt=0, max_digits=14, decimal_places=2)] = None

    @model_validator(mode="after")
    def _limit_needs_price(self) -> ExchangeOrderIn:
        if self.type == "limit" and self.price is None:
            raise ValueError("a limit order needs a price")
        return self


class Exchange:
    """The exchange's books and its unreliable fill delivery."""

    def __init__(self, config: ExchangeConfig | None = None) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.counters = {"fills": 0, "sent": 0, "lost": 0, "duplicated": 0, "failed": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.configure(config or ExchangeConfig())

    def configure(self, config: ExchangeConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)

    def place(self, body: ExchangeOrderIn) -> tuple[dict[str, Any], bool]:
        """Accept ``body`` once per client_order_id; returns (order, created)."""
        request = body.model_dump(mode="json")
        existing = self.orders.get(body.client_order_id)
        if existing is not None:
            if existing["request"] != request:
                raise IdempotencyKeyMismatch("this client_order_id was used for another order")
            return existing, False
        price = body.price if body.type == "limit" and body.price else _MARKET_PRICE
        order = {
            "client_order_id": body.client_order_id,
            "request": request,
            "status": "accepted",
            "qty": body.qty,
            "filled_qty": 0,
            "price": str(price),
            "fills": [],
        }
        self.orders[body.client_order_id] = order
        task = asyncio.create_task(self._fill(order, self._split(body.qty)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return order, True

    def _split(self, qty: int) -> list[int]:
        parts = min(qty, self.rng.randint(1, self.config.max_parts))
        cuts = sorted(self.rng.sample(range(1, qty), parts - 1)) if parts > 1 else []
        bounds = [0, *cuts, qty]
        return [b - a for a, b in itertools.pairwise(bounds)]

    async def _fill(self, order: dict[str, Any], parts: list[int]) -> None:
        for number, qty in enumerate(parts, start=1):
            await asyncio.sleep(self.config.fill_interval_ms / 1000)
            fill = {
                "client_order_id": order["client_order_id"],
                "fill_id": f"{order['client_order_id']}/{number}",
                "qty": qty,
                "price": order["price"],
            }
            order["fills"].append(fill)
            order["filled_qty"] += qty
            order["status"] = "filled" if order["filled_qty"] == order["qty"] else "partial"
            self.counters["fills"] += 1
            await self._deliver(fill)

    async def _deliver(self, fill: dict[str, Any]) -> None:
        if not self.config.callback_url:
            return
        if self.rng.random() < self.config.lost_fill_rate:
            self.counters["lost"] += 1
            return
        copies = 2 if self.rng.random() < self.config.duplicate_fill_rate else 1
        self.counters["duplicated"] += copies - 1
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5)
        for _ in range(copies):
            try:
                await self._http.post(self.config.callback_url, json=fill)
                self.counters["sent"] += 1
            except httpx.HTTPError:
                self.counters["failed"] += 1  # the poll recovers it, as with a lost one

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until every accepted order is completely filled and delivered."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _view(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k != "request"} | {"fills": list(order["fills"])}


def _router(exchange: Exchange) -> APIRouter:
    router = APIRouter()

    @router.post("/orders", status_code=201)
    async def place_order(body: ExchangeOrderIn, response: Response) -> dict[str, Any]:
        order, created = exchange.place(body)
        if not created:
            response.status_code = 200
        return _view(order)

    @router.get("/orders/{client_order_id}")
    async def get_order(client_order_id: str) -> dict[str, Any]:
        order = exchange.orders.get(client_order_id)
        if order is None:
            raise NotFound(f"no order {client_order_id}")
        return _view(order)

    @router.get("/config")
    async def get_config() -> ExchangeConfig:
        return exchange.config

    @router.put("/config")
    async def put_config(config: ExchangeConfig) -> ExchangeConfig:
        exchange.configure(config)
        return exchange.config

    @router.get("/stats")
    async def stats() -> dict[str, int]:
        return dict(exchange.counters)

    return router


def create_exchange_app(exchange: Exchange) -> FastAPI:
    """The exchange's ASGI app; its lifespan stops pending fills on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await exchange.aclose()

    app = FastAPI(title="convergent fake exchange", lifespan=lifespan)
    install_problem_handlers(app)
    app.include_router(_router(exchange))
    return app
