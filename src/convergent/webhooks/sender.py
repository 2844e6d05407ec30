"""Sending one signed callback and classifying what came back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from convergent.errors import MissingExtra

try:
    import httpx
except ImportError as exc:
    raise MissingExtra("http", "webhook delivery") from exc

from convergent.errors import UnsafeDestination
from convergent.messages import json_dumps
from convergent.retry import parse_retry_after
from convergent.webhooks.config import WebhookSettings
from convergent.webhooks.safety import check_destination
from convergent.webhooks.signing import signature_header

__all__ = ["Outcome", "SendResult", "send"]

#: statuses whose Retry-After we honour
RETRY_AFTER_STATUSES = frozenset({429, 502, 503, 504})


class Outcome:
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an HTTP answer other than 2xx
    GONE = "gone"  # 410: the receiver asks us to stop
    TIMEOUT = "timeout"
    ERROR = "error"  # connection refused, reset, TLS...
    REFUSED = "refused"  # the SSRF guard stopped it


@dataclass(frozen=True)
class SendResult:
    outcome: str
    status_code: int | None
    duration_ms: int
    error: str | None = None
    snippet: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.SUCCEEDED


async def send(
    client: httpx.AsyncClient,
    url: str,
    message_id: str,
    payload: object,
    secrets: list[str],
    timestamp: int,
    settings: WebhookSettings,
) -> SendResult:
    """POST one callback; never raises for the receiver's failures, it reports them."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        destination = await check_destination(url, settings.allow)
    except UnsafeDestination as exc:
        return SendResult(Outcome.REFUSED, None, took(), error=exc.message)
    body = json_dumps(payload)
    headers = {
        "content-type": "application/json",
        "user-agent": "convergent-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, message_id, timestamp, body),
    }
    try:
        async with asyncio.timeout(settings.timeout):
            target, host, extensions = destination.pinned()  # no second DNS lookup
            request = client.build_request(
                "POST", target, content=body, headers={**headers, **host}, extensions=extensions
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                snippet = await _read_snippet(response, settings.snippet_bytes)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return SendResult(Outcome.TIMEOUT, None, took(), error="no answer within the timeout")
    except httpx.HTTPError as exc:
        return SendResult(Outcome.ERROR, None, took(), error=f"{type(exc).__name__}: {exc}")
    status = response.status_code
    if 200 <= status < 300:
        return SendResult(Outcome.SUCCEEDED, status, took(), snippet=snippet)
    if status == 410:
        return SendResult(Outcome.GONE, status, took(), snippet=snippet)
    retry_after = None
    if status in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    error = "redirects are not followed" if 300 <= status < 400 else None
    return SendResult(
        Outcome.FAILED, status, took(), error=error, snippet=snippet, retry_after=retry_after
    )


async def _read_snippet(response: httpx.Response, limit: int) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit].decode("utf-8", "replace")
