"""Trade orders sent to the fake exchange, whose fill messages get lost and duplicated."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import httpx

from convergent.errors import StoreUnavailable
from convergent.store import Store
from convergent_shop import trading

__all__ = ["TradeStats", "TradeWorkload"]


@dataclass
class TradeStats:
    placed: int = 0
    retries: int = 0
    gave_up: int = 0
    qty: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"trades_placed": self.placed, "trade_retries": self.retries, "trade_qty": self.qty}


@dataclass
class TradeWorkload:
    """Records each trade order in the shop, then sends it (retried with the same id)."""

    store: Store
    exchange_url: str
    trades: int = 20
    run_id: str = "demo"
    seed: int | None = None
    max_attempts: int = 5
    stats: TradeStats = field(default_factory=TradeStats)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        async with httpx.AsyncClient(base_url=self.exchange_url, timeout=5) as http:
            for n in range(self.trades):
                if stop.is_set():
                    return
                await self._trade(http, f"{self.run_id}-t{n}", rng.randint(1, 50), rng)

    async def _trade(
        self, http: httpx.AsyncClient, client_order_id: str, qty: int, rng: random.Random
    ) -> None:
        side = rng.choice(["buy", "sell"])
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self.store.begin() as conn:
                    await trading.place_order(
                        conn,
                        client_order_id=client_order_id,
                        symbol="ACME",
                        side=side,
                        qty=qty,
                        now=self.store.clock.now(),
                    )
                break
            except StoreUnavailable:  # the database may be restarting during a drill
                self.stats.retries += 1
                await asyncio.sleep(0.2 * attempt)  # backoff between attempts
        else:
            self.stats.gave_up += 1
            return
        body = {"client_order_id": client_order_id, "side": side, "qty": qty}
        for attempt in range(1, self.max_attempts + 1):
            try:
                answer = await http.post("/orders", json=body)
                if answer.status_code < 500:
                    self.stats.placed += 1
                    self.stats.qty += qty
                    return
            except httpx.HTTPError:
                pass
            self.stats.retries += 1
            await asyncio.sleep(0.05 * attempt)  # backoff between attempts
        self.stats.gave_up += 1
