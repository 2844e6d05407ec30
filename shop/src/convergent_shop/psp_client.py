"""A typed client of the payment provider: TransientError to retry, PermanentError to give up."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from convergent.errors import PermanentError, TransientError

__all__ = ["PspClient"]


class PspClient:
    """Calls the provider at ``base_url``; every charge carries the caller's idempotency key.

    Timeouts, dropped connections, 5xx and 429 raise ``TransientError`` (the caller retries with
    the same key, or asks ``lookup(key)``); other 4xx raise ``PermanentError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # few idle connections kept: httpcore checks every pooled connection (a socket poll
        # each) on every request, so twenty idle ones after a burst tax each call after it
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=8)
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, limits=limits
        )

    async def authorize(
        self, key: str, *, amount: Decimal | str, currency: str, reference: str
    ) -> dict[str, Any]:
        body = {"amount": str(amount), "currency": currency, "reference": reference}
        return await self._call("POST", "/payments", json=body, headers={"Idempotency-Key": key})

    async def capture(self, payment_id: str, key: str | None = None) -> dict[str, Any]:
        return await self._action(payment_id, "capture", key)

    async def void(self, payment_id: str, key: str | None = None) -> dict[str, Any]:
        return await self._action(payment_id, "void", key)

    async def refund(self, payment_id: str, key: str | None = None) -> dict[str, Any]:
        return await self._action(payment_id, "refund", key)

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """The payment made with ``key``, or None if the provider never saw that key."""
        try:
            return await self._call("GET", "/payments", params={"idempotency_key": key})
        except PermanentError as exc:
            if exc.details.get("status") == 404:
                return None
            raise

    async def ledger(self) -> dict[str, Any]:
        return await self._call("GET", "/ledger")

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        return await self._call("PUT", "/faults", json=faults)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> PspClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _action(self, payment_id: str, action: str, key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key else {}
        return await self._call("POST", f"/payments/{payment_id}/{action}", headers=headers)

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._http.request(method, url, **kwargs)
            response.read()
            body: dict[str, Any] = response.json() if response.content else {}
        except httpx.TimeoutException as exc:
            raise TransientError(f"payment provider timed out on {method} {url}") from exc
        except (httpx.TransportError, ValueError) as exc:
            # a dropped connection or a cut-off body: the provider may have acted
            raise TransientError(f"no usable answer from the payment provider: {exc}") from exc
        status = response.status_code
        if status >= 500 or status == 429:
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                f"payment provider answered {status} on {method} {url}",
                retry_after=float(retry_after) if retry_after else None,
                status=status,
            )
        if status >= 400:
            detail = body.get("detail") or body.get("title") or str(status)
            raise PermanentError(f"payment provider refused: {detail}", status=status, body=body)
        return body
