"""`Store`: a database URL in; the async engine, our tables, transactions and wake-ups out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from convergent import settings
from convergent.clock import Clock, system_clock
from convergent.errors import ConfigurationError, MissingExtra, StoreUnavailable
from convergent.store import revisions, schema
from convergent.store.notify import Notifier

__all__ = ["Store"]

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",  # durable across process crashes; WAL keeps it consistent
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
)
_BEGIN_OPTION = "convergent_sqlite_begin"


def normalise_url(raw: str) -> URL:
    """Accept the usual spellings and pick our async drivers."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"cannot parse database URL {raw!r}: use sqlite+aiosqlite:///./file.db "
            "or postgresql+asyncpg://user@host:5432/db"
        ) from exc
    if url.drivername in ("sqlite", "sqlite+aiosqlite"):
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        return url.set(drivername="postgresql+asyncpg")
    raise ConfigurationError(
        f"unsupported database {url.drivername!r}: convergent runs on SQLite (sqlite+aiosqlite://) "
        "and PostgreSQL (postgresql+asyncpg://)"
    )


class Store:
    """The entry point to storage.

    ``begin()`` opens a write transaction (on SQLite: ``BEGIN IMMEDIATE`` behind an in-process
    lock, so writers queue instead of failing with "database is locked"); ``read()`` opens a
    read-only one. Engines take the caller's ``AsyncConnection`` so users' writes and ours share
    one transaction.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        echo: bool = False,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        config = settings.load(database_url=url)
        self.url = normalise_url(config.database_url)
        self.clock: Clock = clock or system_clock
        self.dialect: str = (
            "postgresql" if self.url.drivername.startswith("postgresql") else "sqlite"
        )
        self.tables = schema
        options: dict[str, Any] = {"echo": echo}
        if self.dialect == "postgresql":
            # small by default: a fleet of processes shares PostgreSQL's max_connections
            options.update(
                pool_size=pool_size or config.db_pool_size,
                max_overflow=max_overflow if max_overflow is not None else config.db_max_overflow,
                pool_recycle=1800,
            )
        options.update(engine_options or {})
        try:
            self.engine: AsyncEngine = create_async_engine(self.url, **options)
        except ImportError as exc:  # the driver is an extra
            extra = "postgres" if self.dialect == "postgresql" else "sqlite"
            raise MissingExtra(extra, f"a {self.dialect} database") from exc
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self.notifier = Notifier(self.engine)
        self._write_lock: asyncio.Lock | None = None

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; commits on success, rolls back on error."""
        if self.dialect == "sqlite":
            if self._write_lock is None:
                self._write_lock = asyncio.Lock()
            async with self._write_lock, self._transaction() as conn:
                yield conn
        else:
            async with self._transaction() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a snapshot; never blocks writers on SQLite WAL)."""
        async with self._transaction(sqlite_begin="DEFERRED") as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection where each statement commits on its own (one round trip each).

        A database that is away or restarting raises `StoreUnavailable`, as with `begin`."""
        async with self._connection() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.asynccontextmanager
    async def statement(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """For ONE statement, which is its own transaction: on PostgreSQL in autocommit mode (no
        BEGIN and COMMIT round trips), on SQLite in ``begin()`` or ``read()``."""
        if self.dialect == "sqlite":
            async with self.begin() if write else self.read() as conn:
                yield conn
            return
        async with self.autocommit() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(self, sqlite_begin: str = "IMMEDIATE") -> AsyncIterator[AsyncConnection]:
        async with self._connection() as conn:
            if sqlite_begin != "IMMEDIATE":
                await conn.execution_options(**{_BEGIN_OPTION: sqlite_begin})
            async with conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; a database that is away or was lost raises `StoreUnavailable`."""
        try:
            conn = await self.engine.connect()
        except (DBAPIError, OSError) as exc:  # refused, restarting, too many clients...
            raise StoreUnavailable(f"cannot reach the database: {exc}") from exc
        try:
            yield conn
        except DBAPIError as exc:
            # a lost connection, not a bad statement ("no such table" is OperationalError too)
            if exc.connection_invalidated or isinstance(exc, InterfaceError):
                raise StoreUnavailable(f"database error: {exc.orig}") from exc
            raise
        finally:
            await conn.close()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(f"database check failed: {exc}") from exc

    async def migrate(self) -> None:
        """Apply our Alembic migrations (safe to call from several processes at once).

        Where our revisions are a branch of your own Alembic history (`convergent.store.alembic`)
        this only checks that ``alembic upgrade heads`` brought them to head."""
        async with self.begin() as conn:
            if self.is_postgres:  # one migrator at a time across processes
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7318020311)"))
            await conn.run_sync(revisions.upgrade)

    async def schema_state(self) -> revisions.SchemaState:
        """Our revision in this database and where it is recorded."""
        async with self.read() as conn:
            return await conn.run_sync(revisions.read_state)

    async def check_schema(self) -> None:
        """Raise `NotMigrated`, naming the command to run, unless our tables are at head."""
        problem = (await self.schema_state()).problem(self.url)
        if problem is not None:
            raise problem

    async def close(self) -> None:
        await self.notifier.close()
        await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # we issue BEGIN ourselves (below), so the driver must not
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")
