"""PostgreSQL (asyncpg): ``FOR UPDATE SKIP LOCKED`` claims, so many workers on many machines
share rows with no coordinator; data-modifying CTEs, so a batch of writes is one statement."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import settings
from convergent.store import postgres_batches as batches
from convergent.store.dialect import Dialect
from convergent.store.postgres_keys import DriverKeys

__all__ = ["PostgresDialect"]

S = TypeVar("S", bound=sa.Select)  # type: ignore[type-arg]
_MIGRATION_LOCK = 7318020311

# The commit of an idempotency lock need not wait for the disk: the handler's durable commit
# comes later in the WAL and flushes it too, and a lock lost in a database crash guarded a
# transaction lost with it. set_config(..., true) applies to this statement's own transaction.
_ASYNC_COMMIT = sa.select(
    sa.func.set_config("synchronous_commit", "off", sa.true()).label("async_commit")
).subquery("async_commit")


class PostgresDialect(Dialect):
    name = "postgresql"
    extra = "postgres"
    single_writer = False
    parallel_commits = 3  # rows of different runs never conflict; each run awaits its own write
    one_statement_writes = True
    idempotency_keys = DriverKeys()

    def engine_options(self, pool_size: int, max_overflow: int) -> dict[str, Any]:
        # small by default (the settings): a fleet of processes shares max_connections; every
        # wait is bounded, so a database that stalls (not resets) answers 503, not a hang
        config = settings.load()
        return {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_recycle": 1800,
            "pool_timeout": config.db_pool_timeout,
            "connect_args": {
                "timeout": config.db_connect_timeout,
                "command_timeout": config.db_statement_timeout,
            },
        }

    @contextlib.asynccontextmanager
    async def unbounded(self, conn: AsyncConnection) -> AsyncIterator[None]:
        # asyncpg reads the connection's command_timeout at each statement
        driver: Any = (await conn.get_raw_connection()).driver_connection
        config = driver._config
        driver._config = config._replace(command_timeout=None)
        try:
            yield
        finally:
            driver._config = config

    async def create_database(self, admin: AsyncConnection, url: URL, name: str) -> URL:
        await admin.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return url.set(database=name)

    def migration_lock(self) -> sa.Executable:
        return sa.text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")

    def insert(self, table: sa.Table) -> postgresql.Insert:
        return postgresql.insert(table)

    def lock_row(self, stmt: S) -> S:
        return stmt.with_for_update()

    def lock_for_claim(self, stmt: S, of: sa.Table | None = None) -> S:
        return stmt.with_for_update(skip_locked=True, of=of)

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        # one array parameter: the statement (and its prepared plan) is the same for any length
        array = postgresql.ARRAY(column.type)
        return column == sa.any_(sa.bindparam(None, list(values), type_=array))

    def among_param(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(column.type)))

    def insert_async_commit(self, table: sa.Table, values: dict[str, Any]) -> postgresql.Insert:
        literals = [
            sa.literal(v, type_=table.c[name].type).label(name) for name, v in values.items()
        ]
        return self.insert(table).from_select(
            list(values), sa.select(*literals).select_from(_ASYNC_COMMIT)
        )

    def transition_with_history(
        self,
        update: sa.Update,
        table: sa.Table,
        *,
        id_column: str,
        state_column: str,
        version_column: str,
        channel: str | None,
    ) -> sa.Select[Any]:
        return batches.transition_statement(
            update,
            table,
            id_column=id_column,
            state_column=state_column,
            version_column=version_column,
            channel=channel,
        )

    def write_checkpoints(
        self, by_kind: dict[str, list[dict[str, Any]]], notify_channel: str | None
    ) -> tuple[sa.Executable, dict[str, Any]]:
        return batches.batch_params(by_kind, notify_channel)

    def start_runs(self, rows: list[dict[str, Any]]) -> tuple[sa.Executable, dict[str, Any]]:
        return batches.START_SQL, batches.start_params(rows)

    def delete_under_leases(
        self, names: list[str], tokens: list[str], parts: list[int], holder: str, ids: list[Any]
    ) -> tuple[sa.Executable, dict[str, Any]]:
        params = {"names": names, "tokens": tokens, "parts": parts, "holder": holder, "ids": ids}
        return batches.DELETE_UNDER_LEASES, params
