"""HTTP clients that use the shop the way real ones do, mistakes included.

They retry with the same Idempotency-Key on timeouts, 5xx, 409 and 429 (honouring
Retry-After), send some requests twice at once, cancel some orders with If-Match, book and
update customers. An endpoint that is not there yet (404/405 on its route) is counted as "not
available" rather than treated as a failure, so the workload runs as the shop grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

__all__ = ["Workload", "WorkloadConfig", "WorkloadStats"]

_RETRYABLE = {409, 425, 429, 500, 502, 503, 504}
# a cancel that lost the race with the saga's step (412) is read again and retried
CANCEL_ATTEMPTS = 3
SKUS = ["sku-apple", "sku-pear", "sku-plum", "sku-fig"]


@dataclass
class WorkloadConfig:
    orders: int = 50
    bookings: int = 10
    customers: int = 5
    concurrency: int = 8  # clients placing orders; bookings and customers get a quarter as many
    #: spread the order starts evenly over this many seconds (None: each client as fast as it
    #: can); a client that falls behind the schedule goes on at once
    spread: float | None = None
    cancel_rate: float = 0.1
    booking_change_rate: float = 0.3  # bookings moved by PATCH (If-Match) once they are made
    double_submit_rate: float = 0.1
    max_attempts: int = 8
    timeout: float = 10.0  # above the shop's 5 s booking SLA, or a slow answer looks like a loss
    max_retry_after: float = 2.0
    api_key: str = ""  # a key from `convergent keys create` (the demo and drill issue one)
    run_id: str = field(default_factory=lambda: f"{int(time.time())}")
    seed: int | None = None


@dataclass
class WorkloadStats:
    requests: int = 0
    retries: int = 0
    double_submits: int = 0
    accepted: int = 0
    cancels: int = 0
    bookings: int = 0
    booking_changes: int = 0
    customers: int = 0
    gave_up: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    not_available: Counter[str] = field(default_factory=Counter)
    order_ids: set[str] = field(default_factory=set)
    orders_by_key: dict[str, set[str]] = field(default_factory=dict)
    booking_codes: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "retries": self.retries,
            "double_submits": self.double_submits,
            "accepted_orders": self.accepted,
            "distinct_orders": len(self.order_ids),
            "keys_with_several_orders": sum(len(ids) > 1 for ids in self.orders_by_key.values()),
            "cancels": self.cancels,
            "bookings": self.bookings,
            "booking_changes": self.booking_changes,
            "customers": self.customers,
            "gave_up": self.gave_up,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "not_available": dict(self.not_available),
        }


class Workload:
    """Drives the shop at ``base_url``; ``run(stop)`` returns when done or told to stop."""

    def __init__(
        self,
        base_url: str,
        config: WorkloadConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,  # tests answer in-process
    ) -> None:
        self.base_url = base_url
        self.transport = transport
        self.config = config or WorkloadConfig()
        self.stats = WorkloadStats()
        self.rng = random.Random(self.config.seed)
        self.done = False

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        headers = {"X-Api-Key": cfg.api_key}
        limits = httpx.Limits(max_connections=cfg.concurrency * 3)
        async with httpx.AsyncClient(
            base_url=self.base_url,
            timeout=cfg.timeout,
            headers=headers,
            limits=limits,
            transport=self.transport,
        ) as http:
            orders = [("order", n) for n in range(cfg.orders)]
            others = [("booking", n) for n in range(cfg.bookings)]
            others += [("customer", n) for n in range(cfg.customers)]
            self.rng.shuffle(others)
            # bookings wait up to the 5 s SLA for their answer: in a pool of their own, a slow
            # confirmation never holds back the clients placing orders
            await asyncio.gather(
                self._clients(http, orders, cfg.concurrency, stop, cfg.spread),
                self._clients(http, others, max(1, cfg.concurrency // 4), stop, cfg.spread),
            )
        self.done = True

    async def _clients(
        self,
        http: httpx.AsyncClient,
        jobs: list[tuple[str, int]],
        clients: int,
        stop: asyncio.Event,
        spread: float | None = None,
    ) -> None:
        """``clients`` concurrent clients work through ``jobs`` until done or ``stop``."""
        loop = asyncio.get_running_loop()
        started, gap = loop.time(), (spread or 0.0) / max(1, len(jobs))
        queue: asyncio.Queue[tuple[int, tuple[str, int]]] = asyncio.Queue()
        for i, job in enumerate(jobs):
            queue.put_nowait((i, job))

        async def client() -> None:
            while not stop.is_set():
                try:
                    i, (kind, n) = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if (wait := started + i * gap - loop.time()) > 0:  # not due yet
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                    if stop.is_set():
                        return
                await getattr(self, f"_{kind}")(http, n)

        await asyncio.gather(*(client() for _ in range(clients)))

    async def send(
        self, http: httpx.AsyncClient, method: str, url: str, route: str, **kwargs: Any
    ) -> httpx.Response | None:
        """One logical request, retried with the same headers; None if unavailable or given up."""
        for attempt in range(1, self.config.max_attempts + 1):
            self.stats.requests += 1
            try:
                answer = await http.request(method, url, **kwargs)
            except httpx.HTTPError:
                answer = None
            if answer is not None:
                self.stats.statuses[answer.status_code] += 1
                if answer.status_code == 405 or (
                    answer.status_code == 404 and _route_missing(answer)
                ):
                    self.stats.not_available[route] += 1
                    return None
                if answer.status_code not in _RETRYABLE:
                    return answer
            if attempt == self.config.max_attempts:
                break
            self.stats.retries += 1
            await asyncio.sleep(self._delay(attempt, answer))
        self.stats.gave_up += 1
        return None

    def _delay(self, attempt: int, answer: httpx.Response | None) -> float:
        if answer is None:  # no answer at all: the API is restarting; give it a moment
            return self.rng.uniform(0.5, 1.5)
        retry_after = answer.headers.get("Retry-After") if answer is not None else None
        if retry_after:
            try:
                return min(self.config.max_retry_after, float(retry_after))
            except ValueError:
                pass
        return self.rng.uniform(0, min(1.0, 0.05 * 2**attempt))

    async def _order(self, http: httpx.AsyncClient, n: int) -> None:
        items = [
            {"sku": sku, "qty": self.rng.randint(1, 3)}
            for sku in self.rng.sample(SKUS, self.rng.randint(1, 2))
        ]
        body = {
            "customer_id": f"cust-{n % max(1, self.config.customers)}",
            "items": items,
            "amount": f"{self.rng.randint(500, 20000) / 100:.2f}",
            "currency": "EUR",
        }
        key = f"order-{self.config.run_id}-{n}"
        kwargs: dict[str, Any] = {"json": body, "headers": {"Idempotency-Key": key}}
        if self.rng.random() < self.config.double_submit_rate:
            self.stats.double_submits += 1
            answers = list(
                await asyncio.gather(
                    self.send(http, "POST", "/orders", "POST /orders", **kwargs),
                    self.send(http, "POST", "/orders", "POST /orders", **kwargs),
                )
            )
        else:
            answers = [await self.send(http, "POST", "/orders", "POST /orders", **kwargs)]
        created = [a for a in answers if a is not None and a.status_code in (200, 201, 202)]
        for answer in created:
            order_id = str(answer.json().get("id"))
            self.stats.order_ids.add(order_id)
            self.stats.orders_by_key.setdefault(key, set()).add(order_id)
        if not created:
            return
        self.stats.accepted += 1
        if self.rng.random() < self.config.cancel_rate:
            await self._cancel(http, str(created[0].json().get("id")))

    async def _cancel(self, http: httpx.AsyncClient, order_id: str) -> None:
        """Read, then cancel with If-Match; on 412 (the saga moved the order meanwhile) read
        again and retry, as a client would, a few times."""
        route = "POST /orders/{id}/cancel"
        for _ in range(CANCEL_ATTEMPTS):
            read = await self.send(http, "GET", f"/orders/{order_id}", "GET /orders/{id}")
            if read is None or read.status_code != 200:
                return
            headers = {"If-Match": read.headers.get("ETag", "*")}
            answer = await self.send(
                http, "POST", f"/orders/{order_id}/cancel", route, headers=headers
            )
            if answer is not None and answer.status_code < 300:
                self.stats.cancels += 1
            if answer is None or answer.status_code != 412:
                return

    async def _booking(self, http: httpx.AsyncClient, n: int) -> None:
        code = f"bk-{self.config.run_id}-{n}"
        when = datetime.now(UTC) + timedelta(days=2 + n % 5, hours=n % 12)
        body = {
            "restaurant": f"restaurant-{n % 3}",
            "time": when.isoformat(),
            "party_size": 2 + n % 6 if n % 10 else 40,  # every tenth is too large: it fails
            "name": f"guest {n}",
        }
        route = "PUT /bookings/{code}"
        answer = await self.send(http, "PUT", f"/bookings/{code}", route, json=body)
        if answer is None or answer.status_code >= 300:
            return
        self.stats.bookings += 1
        self.stats.booking_codes.add(code)
        if answer.json().get("state") == "ready" and (
            self.rng.random() < self.config.booking_change_rate
        ):
            await self._change_booking(http, code, answer, n)

    async def _change_booking(
        self, http: httpx.AsyncClient, code: str, answer: httpx.Response, n: int
    ) -> None:
        """Move the booking by an hour with If-Match; on 412 read it again and retry once."""
        route = "PATCH /bookings/{code}"
        for _ in range(2):
            when = datetime.fromisoformat(answer.json()["time"]) + timedelta(hours=1)
            body = {"time": when.isoformat(), "name": f"guest {n} (moved)"}
            headers = {"If-Match": answer.headers.get("ETag", "*")}
            changed = await self.send(
                http, "PATCH", f"/bookings/{code}", route, json=body, headers=headers
            )
            if changed is not None and changed.status_code < 300:
                self.stats.booking_changes += 1
                return
            if changed is None or changed.status_code != 412:
                return
            read = await self.send(http, "GET", f"/bookings/{code}", "GET /bookings/{code}")
            if read is None or read.status_code != 200:
                return
            answer = read

    async def _customer(self, http: httpx.AsyncClient, n: int) -> None:
        body = {"name": f"Customer {n}", "email": f"c{n}@example.com"}
        route = "PUT /customers/{id}"
        answer = await self.send(http, "PUT", f"/customers/cust-{n}", route, json=body)
        if answer is not None and answer.status_code < 300:
            self.stats.customers += 1


def _route_missing(answer: httpx.Response) -> bool:
    """A 404 from routing (no such endpoint), not from a handler that looked something up."""
    try:
        body = answer.json()
    except ValueError:
        return True
    detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
    return detail in ("", "Not Found")
