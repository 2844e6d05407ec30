"""What differs between the databases, behind one small interface.

Each database has one module (`convergent.store.postgres`, `convergent.store.sqlite`) with one
`Dialect`; a `Store` holds the one for its database as ``store.sql``, and engines reach it from
their connection (``store_of(conn).sql``). Outside ``store/`` no code asks which database it is on:
it uses a statement from here, or a capability flag that says what the database can do.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from convergent.ids import uuid7

if TYPE_CHECKING:
    from convergent.store.postgres_keys import DriverKeys

__all__ = ["Dialect", "Insert", "history_params"]

#: an INSERT with ``on_conflict_do_nothing`` / ``on_conflict_do_update`` and ``excluded``
Insert = postgresql.Insert | sqlite.Insert
S = TypeVar("S", bound=sa.Select)  # type: ignore[type-arg]
T = TypeVar("T")


class Dialect(abc.ABC):
    """The statements and capabilities of one database."""

    #: the database's name, for messages and health checks ("postgresql", "sqlite")
    name: str
    #: the package extra that installs its driver (``pip install convergent[extra]``)
    extra: str
    #: writes queue behind one writer (in this process, the Store's write lock)
    single_writer: bool
    #: how many group-commit batches may be in flight at once
    parallel_commits: int
    #: data-modifying CTEs: a batch of mixed writes is ONE autocommit statement (one round trip)
    one_statement_writes: bool
    #: idempotency keys claimed and completed straight through the driver (else SQLAlchemy)
    idempotency_keys: DriverKeys | None = None

    # -- engine set-up -------------------------------------------------------------------------
    def engine_options(self, pool_size: int, max_overflow: int) -> dict[str, Any]:
        """Options for ``create_async_engine`` (pool sizes where the database has a pool)."""
        return {}

    @contextlib.asynccontextmanager
    async def unbounded(self, conn: AsyncConnection) -> AsyncIterator[None]:
        """Lift the statement timeout on ``conn`` for the block (migrations wait for a lock)."""
        yield

    def configure(self, engine: AsyncEngine) -> None:  # noqa: B027 - optional hook
        """Hook the engine's events (connection pragmas, how transactions begin)."""

    def read_options(self) -> dict[str, Any]:
        """Execution options of a read-only transaction."""
        return {}

    @abc.abstractmethod
    async def create_database(self, admin: AsyncConnection, url: URL, name: str) -> URL:
        """Create an empty database ``name`` beside ``url``'s (replacing one of that name);
        ``admin`` is an autocommit connection to ``url``. Returns the new database's URL."""

    def migration_lock(self) -> sa.Executable | None:
        """A statement that makes one migrator at a time wait for the others, if needed."""
        return None

    # -- statements ----------------------------------------------------------------------------
    @abc.abstractmethod
    def insert(self, table: sa.Table) -> Insert:
        """An INSERT that can say what to do on a conflict (upserts, insert-if-absent)."""

    def lock_row(self, stmt: S) -> S:
        """Make ``stmt`` wait for and lock the rows it selects (read-modify-write)."""
        return stmt

    def lock_for_claim(self, stmt: S, of: sa.Table | None = None) -> S:
        """Make ``stmt`` claim rows no other claimer holds (skipping rows locked by others).

        ``of`` names the table whose rows are claimed when ``stmt`` joins others."""
        return stmt

    def among(self, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """``column IN values``."""
        return column.in_(list(values))

    def among_param(self, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
        """`among` for a statement built once: the values come as the list parameter ``name``."""
        return column.in_(sa.bindparam(name, expanding=True))

    def once(self, key: Hashable, build: Callable[[], T]) -> T:
        """``build()``, called once per ``key`` for this database: for the statements of hot
        paths (building a statement and its cache key costs more than SQLite running it)."""
        built: dict[Hashable, Any] = self.__dict__.setdefault("_built", {})
        if key not in built:
            built[key] = build()
        return built[key]  # type: ignore[no-any-return]

    def insert_async_commit(self, table: sa.Table, values: dict[str, Any]) -> Insert:
        """An insert of one row whose commit need not wait for the disk, where the database
        can say so per statement (a later durable commit in the same log flushes it)."""
        return self.insert(table).values(**values)

    # -- one-statement writes (only where ``one_statement_writes``) ----------------------------
    def _one_statement(self) -> NotImplementedError:
        return NotImplementedError(f"{self.name} has no one-statement batches")

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
        """``update``, its history row and a wake-up on ``channel``, selecting the new row."""
        raise self._one_statement()

    def write_checkpoints(
        self, by_kind: dict[str, list[dict[str, Any]]], notify_channel: str | None
    ) -> tuple[sa.Executable, dict[str, Any]]:
        """A worker's batch of step checkpoints and run updates (``steps``, ``finish``,
        ``suspend``, ``status``) as one statement and its parameters."""
        raise self._one_statement()

    def start_runs(self, rows: list[dict[str, Any]]) -> tuple[sa.Executable, dict[str, Any]]:
        """Insert runs (a duplicate key keeps its run); selects ``id, workflow, key`` of each."""
        raise self._one_statement()

    def delete_under_leases(
        self, names: list[str], tokens: list[str], parts: list[int], holder: str, ids: list[Any]
    ) -> tuple[sa.Executable, dict[str, Any]]:
        """Lock the leases still ``holder``'s and delete the outbox rows ``ids`` of their
        partitions; selects the partitions still held."""
        raise self._one_statement()


def history_params(
    *,
    resource_type: str,
    action: str,
    from_state: str | None,
    at: datetime,
    actor: str | None,
    cause: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """The parameters `Dialect.transition_with_history` expects for its history row."""
    return {
        "h_id": uuid7(),
        "h_type": resource_type,
        "h_type_prefix": f"{resource_type}:",
        "h_action": action,
        "h_from": from_state,
        "h_at": at,
        "h_actor": actor,
        "h_cause": cause,
        "h_meta": metadata,
    }
