"""Shared fixtures: real SQLite and real PostgreSQL, one fresh database per test session.

With CI=true a test that needs PostgreSQL or NATS fails when the service is down; locally it
skips with the command that starts the service.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from convergent.store import Store

# xdist starts its workers with COLUMNS=80 and LINES=24, which a serial run does not have: Rich
# would fix its consoles' width from them (the CLI's tables, built once at import, would wrap)
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)

CI = os.environ.get("CI", "").lower() == "true"
CLUSTER_TESTS = "tests/integration/cluster/"
PG_ADMIN_URL = os.environ.get(
    "CONVERGENT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
NATS_URL = os.environ.get("CONVERGENT_TEST_NATS_URL", "nats://127.0.0.1:4222")
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
NATS_START = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs `-n 2 --dist loadscope`: each module's tests on one worker, so a module's
    shared server, browser or built wheel is set up once, and all of tests/integration/cluster on
    one worker, one network lab at a time. (xdist_group marks cannot do this on pytest 9: xdist
    3.8 appends the group to ``item._nodeid``, which pytest 9 no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(CLUSTER_TESTS):
                return CLUSTER_TESTS
            return nodeid.split("::", 1)[0]  # the module, not the class

    return ModuleScheduling(config, log)


def service_missing(what: str, how_to_start: str) -> None:
    message = f"{what} is not reachable; start it with: {how_to_start}"
    if CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def port_open(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _pg_admin(statements: list[str]) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


async def _migrate(url: str) -> None:
    store = Store(url)
    try:
        await store.migrate()
    finally:
        await store.close()


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated, dropped at the end."""
    if not port_open(PG_ADMIN_URL, 5432):
        service_missing("PostgreSQL", PG_START)
    name = f"convergent_test_{os.getpid()}_{secrets.token_hex(3)}"
    _run(_pg_admin([f'CREATE DATABASE "{name}"']))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _run(_migrate(url))
    yield url
    _run(
        _pg_admin(
            [
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
                f'DROP DATABASE IF EXISTS "{name}"',
            ]
        )
    )


async def _non_empty(conn: AsyncConnection, names: list[str]) -> list[str]:
    """Which of the tables ``names`` hold a row, in one round trip."""
    if not names:
        return []
    probes = [
        sa.select(sa.literal(name)).where(sa.exists().select_from(sa.table(name))) for name in names
    ]
    return [row[0] for row in await conn.execute(sa.union_all(*probes))]


async def _pg_reset(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            rows = await conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            names = [r[0] for r in rows]
            ours = [n for n in names if n.startswith("convergent_") and "alembic" not in n]
            theirs = [n for n in names if not n.startswith("convergent_")]
            if theirs:
                await conn.execute(sa.text(f"DROP TABLE {', '.join(theirs)} CASCADE"))
            # TRUNCATE costs a new file per table, empty or not (half a second for all of ours):
            # only the tables the last test wrote to are emptied
            written = await _non_empty(conn, ours)
            if written:
                await conn.execute(sa.text(f"TRUNCATE {', '.join(written)} CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    _run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own."""
    path = tmp_path / "convergent.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def pg_url(pg_session_url: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    _run(_pg_reset(pg_session_url))
    return pg_session_url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def nats_url() -> str:
    if not port_open(NATS_URL, 4222):
        service_missing("NATS", NATS_START)
    return NATS_URL


@pytest.fixture(params=["sqlite", "postgres"])
def blank_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (never migrated) of this test's own: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}"
        return
    if not port_open(PG_ADMIN_URL, 5432):
        service_missing("PostgreSQL", PG_START)
    name = f"convergent_blank_{os.getpid()}_{secrets.token_hex(3)}"
    _run(_pg_admin([f'CREATE DATABASE "{name}"']))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _run(
            _pg_admin(
                [
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'",
                    f'DROP DATABASE IF EXISTS "{name}"',
                ]
            )
        )
