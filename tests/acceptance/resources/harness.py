"""One `convergent serve` per module and database, shared by that module's tests.

Starting the server costs seconds on a busy machine; the resource tests use distinct booking
codes and order ids, so they can share one server instead of paying for one each.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server, free_port, start_process, wait_until_healthy
from tests.conftest import PG_ADMIN_URL, _pg_admin, _pg_reset


def database_for(request: pytest.FixtureRequest, tmp: Path) -> str:
    """A migrated database of the parametrised kind for a module-scoped server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp / 'shop.db'}"
    url = str(request.getfixturevalue("pg_session_url"))
    asyncio.run(_pg_reset(url))
    return url


@contextmanager
def separate_database(database_url: str, tmp: Path) -> Iterator[str]:
    """An empty database of the same kind as ``database_url``, dropped afterwards."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp / 'separate.db'}"
        return
    name = f"convergent_test_res_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin([f'CREATE DATABASE "{name}"']))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(
            _pg_admin(
                [
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'",
                    f'DROP DATABASE IF EXISTS "{name}"',
                ]
            )
        )


@contextmanager
def running_shop(
    database_url: str, tmp: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    process = start_process(["serve", "--port", str(port)], database_url, log, env)
    server = Server(f"http://127.0.0.1:{port}", database_url, process, log)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        server.stop()
