"""Client side: make keys, and retry a request with the same key until it has a final answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from convergent.errors import MissingExtra

try:
    import httpx
except ImportError as exc:
    raise MissingExtra("http", "the idempotent HTTP client") from exc

from convergent import tracing
from convergent.idempotency.keys import new_key
from convergent.retry import RetryPolicy, parse_retry_after

__all__ = ["IdempotentClient"]

IDEMPOTENCY_KEY = "Idempotency-Key"


def _retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def _retryable(response: httpx.Response) -> bool:
    """5xx, 429, and a 409 that says when to come back (the key is still in progress)."""
    status = response.status_code
    if status >= 500 or status == 429:
        return True
    return status == 409 and "Retry-After" in response.headers


class IdempotentClient:
    """Wraps an ``httpx.AsyncClient``; each call sends one key on every attempt.

    Transport errors, 5xx, 429 and 409-with-Retry-After are retried with full-jitter backoff
    (``RetryPolicy``), never sooner than the server's ``Retry-After``; other answers are final.
    When attempts (or the policy's ``deadline``, counted in backoff seconds) run out, the last
    response is returned or the last transport error raised.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.http = http
        self.policy = policy or RetryPolicy(max_attempts=5, initial_delay=0.2, max_delay=10.0)
        self._sleep = sleep

    async def request(
        self, method: str, url: str, *, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        headers[IDEMPOTENCY_KEY] = key or new_key()
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._send(method, url, headers, attempt, kwargs)
            except httpx.TransportError:
                if attempt >= self.policy.max_attempts:
                    raise
                last: httpx.Response | None = None
            else:
                if not _retryable(response) or attempt >= self.policy.max_attempts:
                    return response
                retry_after = _retry_after(response)
                last = response
            delay = self.policy.backoff(attempt)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.policy.max_delay))
            if self.policy.deadline is not None and waited + delay > self.policy.deadline:
                if last is None:
                    raise httpx.TimeoutException(f"gave up on {method} {url} at the deadline")
                return last
            if last is not None:
                await last.aclose()
            waited += delay
            await self._sleep(delay)

    async def _send(
        self, method: str, url: str, headers: dict[str, str], attempt: int, kwargs: Any
    ) -> httpx.Response:
        """One attempt; traced, a CLIENT span whose context the request carries on."""
        if not tracing.enabled():
            return await self.http.request(method, url, headers=headers, **kwargs)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": httpx.URL(url).path,
            "convergent.idempotency_key": headers[IDEMPOTENCY_KEY],
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with tracing.tracer.start_as_current_span(
            method, kind=tracing.SpanKind.CLIENT, attributes=attributes
        ) as span:
            sent = {**headers, **tracing.carrier()}
            response = await self.http.request(method, url, headers=sent, **kwargs)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(tracing.Status(tracing.StatusCode.ERROR))
            return response

    async def post(self, url: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, key=key, **kwargs)

    async def put(self, url: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", url, key=key, **kwargs)

    async def patch(self, url: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", url, key=key, **kwargs)

    async def delete(self, url: str, *, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", url, key=key, **kwargs)
