"""Is the database answering, and can the broker be reached? Cheap checks for the Overview."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from urllib.parse import urlparse

from convergent import settings
from convergent.errors import StoreUnavailable
from convergent.store import Store

__all__ = ["Health", "check_broker", "check_database"]

_DEFAULT_PORTS = {"nats": 4222, "kafka": 9092}


@dataclass(frozen=True)
class Health:
    name: str
    ok: bool
    detail: str


async def check_database(store: Store) -> Health:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(store.ping(), 3.0)
    except (StoreUnavailable, TimeoutError) as exc:
        return Health(f"database ({store.sql.name})", False, str(exc) or "no answer within 3 s")
    return Health(
        f"database ({store.sql.name})",
        True,
        f"answered in {1000 * (time.perf_counter() - started):.1f} ms",
    )


async def check_broker(broker_url: str | None) -> Health:
    """The embedded log lives in the database; NATS and Kafka are checked by a TCP connect."""
    url = settings.broker_url(broker_url)
    parsed = urlparse(url.split(",")[0])
    scheme = parsed.scheme or "embedded"
    if scheme == "embedded":
        return Health("broker (embedded)", True, "the log lives in the database")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or _DEFAULT_PORTS.get(scheme, 0)
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (OSError, TimeoutError) as exc:
        return Health(f"broker ({scheme})", False, f"{host}:{port} unreachable: {exc or 'timeout'}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Health(
        f"broker ({scheme})",
        True,
        f"{host}:{port} accepts connections ({1000 * (time.perf_counter() - started):.1f} ms)",
    )
