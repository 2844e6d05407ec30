"""One `convergent serve` per module and database, shared by that module's tests.

Starting the server costs seconds on a busy machine; the resource tests use distinct booking
codes and order ids, so they can share one server instead of paying for one each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from convergent.drill import free_port
from tests.acceptance.conftest import Server, start_process, wait_until_healthy
from tests.conftest import _pg_reset


def database_for(request: pytest.FixtureRequest, tmp: Path) -> str:
    """A migrated database of the parametrised kind for a module-scoped server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / 'shop.db'}"
    url = str(request.getfixturevalue("pg_session_url"))
    asyncio.run(_pg_reset(url))
    return url


@contextmanager
def running_shop(
    database_url: str, tmp: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[Server]:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    process = start_process(["serve", "--port", str(port), *args], database_url, log, env)
    server = Server(f"http://127.0.0.1:{port}", database_url, process, log)
    try:
        wait_until_healthy(server, timeout=120)  # start-up is slow when the machine is busy
        yield server
    finally:
        server.stop()
