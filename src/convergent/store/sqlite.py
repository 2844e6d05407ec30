"""SQLite (aiosqlite, WAL): one writer at a time, so a plain select in a write transaction is
already exclusive; ``BEGIN IMMEDIATE`` takes the write lock up front instead of failing to
upgrade a read lock later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convergent.store.dialect import Dialect

__all__ = ["SQLiteDialect"]

_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",  # durable across process crashes; WAL keeps it consistent
    "PRAGMA foreign_keys=ON",
)
_BEGIN_OPTION = "convergent_sqlite_begin"


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    # we issue BEGIN ourselves (below), so the driver must not
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # an inline connection waits for another process's lock on the loop, not in SQLite
    inline = _inline(dbapi_connection) is not None
    for pragma in (*_PRAGMAS, f"PRAGMA busy_timeout={0 if inline else 30000}"):
        cursor.execute(pragma)
    cursor.close()


def _inline_do_connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    from convergent.store.sqlite_inline import inline_connect  # needs the sqlite extra

    return dialect.loaded_dbapi.connect(*cargs, async_creator_fn=inline_connect, **cparams)


def _inline(dbapi_connection: Any) -> Any | None:
    """The `InlineConnection` under SQLAlchemy's adapter, or None. Known by its method: the class
    needs the sqlite extra, and this runs on every BEGIN."""
    driver = getattr(dbapi_connection, "_connection", None)
    return driver if hasattr(driver, "run_now") else None


def _on_begin(conn: sa.Connection) -> None:
    options = conn.get_execution_options()
    if options.get("isolation_level") == "AUTOCOMMIT":
        return  # each statement commits on its own: a BEGIN here would never be committed
    mode = options.get(_BEGIN_OPTION, "IMMEDIATE")
    # straight to the driver when it runs on this thread (SQLAlchemy's statement machinery is
    # most of a BEGIN's cost); a busy or failing BEGIN goes the long way, waited for and wrapped
    driver = _inline(conn.connection.dbapi_connection)
    if driver is not None and driver.run_now(f"BEGIN {mode}"):
        return
    conn.exec_driver_sql(f"BEGIN {mode}")


class SQLiteDialect(Dialect):
    name = "sqlite"
    extra = "sqlite"
    single_writer = True
    parallel_commits = 1
    one_statement_writes = False  # no DML in CTEs

    def __init__(self, *, inline: bool = True) -> None:
        self.inline = inline

    def configure(self, engine: AsyncEngine) -> None:
        sync_engine = engine.sync_engine
        for name, listener in (("connect", _on_connect), ("begin", _on_begin)):
            if not event.contains(sync_engine, name, listener):  # once per engine
                event.listen(sync_engine, name, listener)
        dialect = sync_engine.dialect
        if self.inline and not event.contains(dialect, "do_connect", _inline_do_connect):
            event.listen(dialect, "do_connect", _inline_do_connect)

    async def create_database(self, admin: AsyncConnection, url: URL, name: str) -> URL:
        path = Path(url.database or ".").parent / f"{name}.db"
        for stale in path.parent.glob(f"{path.name}*"):  # the file with its -wal and -shm
            stale.unlink()
        return url.set(database=str(path))

    def read_options(self) -> dict[str, Any]:
        return {_BEGIN_OPTION: "DEFERRED"}  # a snapshot that never blocks the writer

    def insert(self, table: sa.Table) -> sqlite.Insert:
        return sqlite.insert(table)
