"""`Store`: a database URL in; the async engine, our tables, transactions and wake-ups out."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from convergent import settings, tracing
from convergent.clock import Clock, system_clock
from convergent.errors import ConfigurationError, MissingExtra, StoreConflict, StoreUnavailable
from convergent.store import revisions, schema
from convergent.store.dialect import Dialect
from convergent.store.notify import Notifier
from convergent.store.postgres import PostgresDialect
from convergent.store.sqlite import SQLiteDialect

__all__ = ["Store", "normalise_url", "store_of"]

#: a `Store` by the engine it serves (weakly: a Store that is gone serves nothing)
_by_engine: weakref.WeakKeyDictionary[sa.Engine, weakref.ref[Store]] = weakref.WeakKeyDictionary()
#: connections `Store.adopt` tagged, for as long as each one lives
_adopted: weakref.WeakKeyDictionary[sa.Connection, Store] = weakref.WeakKeyDictionary()


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
    one transaction; every connection the Store hands out knows it (`store_of`).

    ``Store(engine=...)`` shares the application's own ``AsyncEngine`` and its pool: then every
    connection of that engine (an ``AsyncSession``'s too) knows this Store. The application
    keeps owning the engine (``close()`` does not dispose of it).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        echo: bool = False,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self.clock: Clock = clock or system_clock
        self.tables = schema
        self._owns_engine = engine is None
        if engine is None:
            config = settings.load(database_url=url)
            self.url = normalise_url(config.database_url)
            self.sql: Dialect = _dialect_for(self.url, sqlite_inline=config.sqlite_inline)
            options: dict[str, Any] = {"echo": echo}
            options.update(
                self.sql.engine_options(
                    pool_size or config.db_pool_size,
                    max_overflow if max_overflow is not None else config.db_max_overflow,
                )
            )
            options.update(engine_options or {})
            try:
                engine = create_async_engine(self.url, **options)
            except ImportError as exc:  # the driver is an extra
                raise MissingExtra(self.sql.extra, f"a {self.sql.name} database") from exc
        else:
            self.url = _engine_url(engine, url, engine_options)
            # the application's engine keeps its driver as it is
            self.sql = _dialect_for(self.url, sqlite_inline=False)
        self.engine: AsyncEngine = engine
        self.sql.configure(self.engine)
        _claim_engine(self)
        self.notifier = Notifier(self.engine)
        self._write_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    async def adopt(self, conn: AsyncConnection | AsyncSession) -> AsyncConnection:
        """Make the caller's own connection (or an ``AsyncSession``'s) known as this Store's,
        so engines can join its transaction; returns the connection.

        Needed only for a connection of another engine than the Store's: a session's connection
        changes with each of its transactions, so adopt it in each."""
        if isinstance(conn, AsyncSession):
            conn = await conn.connection()
        elif conn.sync_connection is None:
            await conn.start()
        if conn.dialect.name != self.sql.name:
            raise ConfigurationError(
                f"cannot adopt a {conn.dialect.name} connection into a {self.sql.name} Store"
            )
        assert conn.sync_connection is not None
        _adopted[conn.sync_connection] = self
        return conn

    def writer_busy(self) -> bool:
        """Would a write transaction of this process queue now? (Where writers do not queue
        behind one writer, never.)"""
        if not self.sql.single_writer:
            return False
        return self._write_lock is None or self._write_lock.locked()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction; commits on success, rolls back on error. Within a trace, it is
        a span (never the root of one: the loops' own transactions stay out of traces)."""
        if not tracing.enabled() or not tracing.in_trace():
            async with self._begin() as conn:
                yield conn
            return
        attributes = {"db.system.name": self.url.get_backend_name(), "db.operation.name": "BEGIN"}
        with tracing.tracer.start_as_current_span(
            "transaction", kind=tracing.SpanKind.CLIENT, attributes=attributes
        ):
            async with self._begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        if self.sql.single_writer:
            if self._write_lock is None:
                self._write_lock = asyncio.Lock()
            async with self._write_lock, self._transaction() as conn:
                yield conn
        else:
            async with self._transaction() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (a snapshot; never blocks writers on SQLite WAL). Reads
        that need no transaction around them (no savepoint, no lock, one statement or
        statements that may each see their own snapshot) save PostgreSQL two round trips in
        ``statement()``."""
        async with self._transaction(self.sql.read_options()) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection where each statement commits on its own (one round trip each).

        A database that is away or restarting raises `StoreUnavailable`, as with `begin`."""
        async with self._connection() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.asynccontextmanager
    async def statement(self, *, write: bool = False) -> AsyncIterator[AsyncConnection]:
        """For statements that need no transaction around them: each commits on its own
        (autocommit: no BEGIN and COMMIT round trips) where writers do not queue behind one
        writer; else they share one ``begin()`` (or ``read()``) transaction."""
        if self.sql.single_writer:
            async with self.begin() if write else self.read() as conn:
                yield conn
            return
        async with self.autocommit() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _transaction(
        self, options: dict[str, Any] | None = None
    ) -> AsyncIterator[AsyncConnection]:
        async with self._connection() as conn:
            if options:
                await conn.execution_options(**options)
            transaction = await conn.begin()
            try:
                yield conn
                await transaction.commit()
            except TimeoutError as exc:
                if not _from_driver(exc):
                    await transaction.rollback()
                    raise
                # a stalled connection: a rollback would stall too, so drop it unanswered
                await _abandon(conn)
                raise StoreUnavailable("the database did not answer in time") from exc
            except BaseException:
                if transaction.is_active:
                    await transaction.rollback()
                raise

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; a database that is away or was lost raises `StoreUnavailable`."""
        try:
            conn = await self.engine.connect()
        except (DBAPIError, OSError) as exc:  # refused, restarting, too many clients...
            raise StoreUnavailable(f"cannot reach the database: {exc}") from exc
        except (TimeoutError, SATimeoutError) as exc:  # connect or pool timeout
            raise StoreUnavailable(f"no database connection in time: {exc}") from exc
        try:
            yield conn
        except DBAPIError as exc:
            # a lost connection, not a bad statement ("no such table" is OperationalError too)
            if exc.connection_invalidated or isinstance(exc, InterfaceError):
                raise StoreUnavailable(f"database error: {exc.orig}") from exc
            if is_conflict(exc):
                raise _conflict(exc) from exc
            raise
        except TimeoutError as exc:
            if not _from_driver(exc):  # the caller's own deadline
                raise
            await _abandon(conn)
            raise StoreUnavailable("the database did not answer in time") from exc
        except Exception as exc:  # a statement sent straight to the driver (asyncpg's errors)
            if is_conflict(exc):
                raise _conflict(exc) from exc
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

    @contextlib.asynccontextmanager
    async def migration(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction holding the lock `migrate` takes, so one process at a time
        changes the schema: for an application's own tables beside ours."""
        async with self.begin() as conn, self.sql.unbounded(conn):
            lock = self.sql.migration_lock()
            if lock is not None:  # one migrator at a time across processes
                await conn.execute(lock)
            yield conn

    async def migrate(self) -> None:
        """Apply our Alembic migrations (safe to call from several processes at once).

        Where our revisions are a branch of your own Alembic history (`convergent.store.alembic`)
        this only checks that ``alembic upgrade heads`` brought them to head."""
        async with self.migration() as conn:
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

    async def create_database(self, name: str) -> str:
        """Create an empty database ``name`` beside this Store's (on the same PostgreSQL server,
        or as a file in the same directory), replacing one of that name; returns its URL."""
        async with self.autocommit() as admin, self.sql.unbounded(admin):  # may take a while
            url = await self.sql.create_database(admin, self.url, name)
        return url.render_as_string(hide_password=False)

    async def close(self) -> None:
        await self.notifier.close()
        if _by_engine.get(self.engine.sync_engine, _dead)() is self:
            del _by_engine[self.engine.sync_engine]
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def store_of(conn: AsyncConnection) -> Store:
    """The `Store` a connection belongs to: its clock, notifier and statements (``.sql``).

    Every connection a Store hands out knows it, as does every connection of an engine given as
    ``Store(engine=...)`` and every connection passed to `Store.adopt`."""
    sync = conn.sync_connection
    if sync is not None:
        adopted = _adopted.get(sync)
        if adopted is not None:
            return adopted
    ref = _by_engine.get(conn.sync_engine)
    store = ref() if ref is not None else None
    if store is None:
        raise ConfigurationError(
            "this connection belongs to no convergent Store: call store.adopt(conn) "
            "or create the Store with Store(engine=...)"
        )
    return store


def _dead() -> None:
    return None


def _dialect_for(url: URL, *, sqlite_inline: bool = False) -> Dialect:
    if url.get_backend_name() == "postgresql":
        return PostgresDialect()
    return SQLiteDialect(inline=sqlite_inline)


def _engine_url(engine: AsyncEngine, url: str | None, options: dict[str, Any] | None) -> URL:
    if not isinstance(engine, AsyncEngine):
        raise ConfigurationError(
            "Store(engine=...) takes an AsyncEngine: build it with "
            "sqlalchemy.ext.asyncio.create_async_engine"
        )
    if url is not None or options:
        raise ConfigurationError("give Store either a URL (and options) or an engine, not both")
    raw = engine.url.render_as_string(hide_password=False)
    if normalise_url(raw).drivername != engine.url.drivername:
        raise ConfigurationError(
            f"Store(engine=...) needs the sqlite+aiosqlite or postgresql+asyncpg driver, "
            f"not {engine.url.drivername}"
        )
    return engine.url


def _claim_engine(store: Store) -> None:
    sync_engine = store.engine.sync_engine
    other = _by_engine.get(sync_engine, _dead)()
    if other is not None:
        raise ConfigurationError(
            f"this engine already serves {other!r}: share that Store (or close it first)"
        )
    _by_engine[sync_engine] = weakref.ref(store)


#: deadlock_detected, serialization_failure: the database rolled the transaction back
_CONFLICT_STATES = frozenset({"40P01", "40001"})


def is_conflict(exc: BaseException) -> bool:
    """Whether the database aborted the transaction of ``exc`` to settle a conflict."""
    orig = getattr(exc, "orig", exc)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return state in _CONFLICT_STATES


def _conflict(exc: BaseException) -> StoreConflict:
    reason = str(getattr(exc, "orig", exc)).partition("\n")[0] or "conflict"
    return StoreConflict(f"the database aborted the transaction: {reason}")


def _from_driver(exc: BaseException) -> bool:
    """Whether a TimeoutError was raised by the database driver (a statement timed out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return str(module).startswith(("asyncpg", "sqlalchemy"))


async def _abandon(conn: AsyncConnection) -> None:
    """Drop a stalled connection at once: no goodbye to a server that does not answer."""
    if conn.invalidated:  # SQLAlchemy dropped it already (a driver timeout ends the connection)
        return
    raw = await conn.get_raw_connection()
    terminate = getattr(raw.dbapi_connection, "terminate", None)
    if terminate is not None:
        terminate()
    await conn.invalidate()
