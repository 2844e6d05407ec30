"""State transitions and optimistic updates on the user's own table.

A transition is one conditional ``UPDATE ... WHERE id = ? AND state IN (...) [AND version = ?]``
that bumps the version and returns the new row, plus a history row and a wake-up, all in the
caller's transaction. Only when no row matched do we read the row, to say why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import faults
from convergent.errors import ConfigurationError, InvalidTransition, NotFound, StaleVersion
from convergent.ids import uuid7
from convergent.resources.history import HistoryEntry, history_row, list_history
from convergent.resources.machine import Action, StateMachine
from convergent.store import Store, direct, history_params, store_of
from convergent.store.notify import NotifyingWrite
from convergent.store.schema import resource_history

__all__ = ["CHANNEL", "ResourceTable"]

#: notifier channel; the payload is ``"{resource_type}:{id}"``
CHANNEL = "convergent_resources"
AFTER_TRANSITION = faults.register(
    "resources.after_transition_before_commit",
    "the UPDATE, its history row and its wake-up are written but not committed",
)
# a change's history row and its wake-up: one statement on PostgreSQL
_HISTORY = NotifyingWrite(resource_history, None, CHANNEL)
_CAS_ATTEMPTS = 8  # multi-source actions: how often to retry when the row moves under us

Row = sa.Row[Any]


@dataclass(frozen=True)
class ResourceTable:
    """A state machine bound to a table with an id, a state and a version column.

    Declare it once at import time. Each call takes the caller's connection, which brings its
    Store's clock, notifier and statements (`convergent.store.store_of`).
    """

    table: sa.Table
    machine: StateMachine
    resource_type: str = ""
    id_column: str = "id"
    state_column: str = "state"
    version_column: str = "version"
    updated_at_column: str | None = "updated_at"
    # built statements by shape and database
    _statements: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.resource_type:
            object.__setattr__(self, "resource_type", self.machine.name)
        for name in (self.id_column, self.state_column, self.version_column):
            if name not in self.table.c:
                raise ConfigurationError(f"table {self.table.name!r} has no column {name!r}")

    # columns
    @property
    def _id(self) -> sa.Column[Any]:
        return self.table.c[self.id_column]

    @property
    def _state(self) -> sa.Column[Any]:
        return self.table.c[self.state_column]

    @property
    def _version(self) -> sa.Column[Any]:
        return self.table.c[self.version_column]

    def _stamp(self, values: dict[str, Any], now: datetime) -> dict[str, Any]:
        col = self.updated_at_column
        if col and col in self.table.c and col not in values:
            values[col] = now
        return values

    # reads
    async def get(self, conn: AsyncConnection, resource_id: Any) -> Row | None:
        return (await conn.execute(self.table.select().where(self._id == resource_id))).first()

    async def history(self, conn: AsyncConnection, resource_id: Any) -> list[HistoryEntry]:
        return await list_history(conn, self.resource_type, str(resource_id))

    # writes
    async def create(
        self,
        conn: AsyncConnection,
        values: Mapping[str, Any],
        *,
        actor: str | None = None,
        cause: str | None = None,
        metadata: dict[str, Any] | None = None,
        conflict_columns: Iterable[str] | None = None,
        state: str | None = None,
    ) -> Row | None:
        """Insert a resource at version 1 (in ``state``, by default the initial one) and record
        its creation.

        With ``conflict_columns`` an existing row with the same values there is left alone and
        None is returned (insert-if-absent, safe under concurrency on both databases).
        """
        state = state or self.machine.initial
        if state not in self.machine.states:
            raise ConfigurationError(f"{self.resource_type} has no state {state!r}")
        store = store_of(conn)
        now = store.clock.now()
        row_values = dict(values)
        row_values.setdefault(self.id_column, uuid7())
        row_values[self.state_column] = state
        row_values[self.version_column] = 1
        self._stamp(row_values, now)
        col = "created_at"
        if col in self.table.c and col not in row_values:
            row_values[col] = row_values.get(self.updated_at_column or "", now)
        stmt: Any
        if conflict_columns is None:
            stmt = sa.insert(self.table)
        else:
            stmt = store.sql.insert(self.table).on_conflict_do_nothing(
                index_elements=list(conflict_columns)
            )
        row = (await conn.execute(stmt.values(row_values).returning(*self.table.c))).first()
        if row is None:
            return None
        await self._recorded(store, conn, row, "create", None, actor, cause, metadata)
        return row

    async def record_created(
        self,
        conn: AsyncConnection,
        row: Row,
        *,
        actor: str | None = None,
        cause: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Record the creation of a row the caller inserted itself."""
        await self._recorded(store_of(conn), conn, row, "create", None, actor, cause, metadata)

    async def transition(
        self,
        conn: AsyncConnection,
        resource_id: Any,
        action: str,
        *,
        expected_version: int | None = None,
        values: Mapping[str, Any] | None = None,
        actor: str | None = None,
        cause: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Row:
        """Apply ``action``; raises NotFound, StaleVersion or InvalidTransition when it cannot."""
        act = self.machine.action(action)
        extra = dict(values or {})
        if len(act.sources) == 1:
            (source,) = act.sources
            row = await self._move(
                conn, resource_id, act, source, expected_version, extra, (actor, cause, metadata)
            )
            if row is None:
                raise await self._why(conn, resource_id, act, expected_version)
            return row
        # several sources: learn the current state, then update only if it is still that state
        # and version (compare-and-set), so the history names the true from-state
        for _ in range(_CAS_ATTEMPTS):
            current = await self._current(conn, resource_id)
            if current is None:
                raise NotFound(f"no {self.resource_type} {resource_id}")
            state, version = current
            if expected_version is not None and version != expected_version:
                raise _stale(self.resource_type, resource_id, version, expected_version)
            if state not in act.sources:
                raise _invalid(self.resource_type, resource_id, action, state)
            row = await self._move(
                conn, resource_id, act, state, version, extra, (actor, cause, metadata)
            )
            if row is not None:
                return row
            if expected_version is not None:
                break
        raise await self._why(conn, resource_id, act, expected_version)

    async def update_fields(
        self,
        conn: AsyncConnection,
        resource_id: Any,
        values: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        states: Iterable[str] | None = None,
        action: str = "update",
        actor: str | None = None,
        cause: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Row:
        """Change other columns, bumping the version; ``states`` limits where that is allowed."""
        for col in (self.state_column, self.version_column, self.id_column):
            if col in values:
                raise ConfigurationError(f"update_fields cannot set {col!r}; use transition()")
        allowed = frozenset(states) if states is not None else None
        stmt = sa.update(self.table).where(self._id == resource_id)
        if allowed is not None:
            stmt = stmt.where(self._state.in_(sorted(allowed)))
        if expected_version is not None:
            stmt = stmt.where(self._version == expected_version)
        store = store_of(conn)
        new = self._stamp(dict(values), store.clock.now())
        new[self.version_column] = self._version + 1
        row = (await conn.execute(stmt.values(new).returning(*self.table.c))).first()
        if row is None:
            pseudo = Action(action, allowed or self.machine.states, "-")
            raise await self._why(conn, resource_id, pseudo, expected_version)
        state = row._mapping[self.state_column]
        await self._recorded(store, conn, row, action, state, actor, cause, metadata)
        return row

    # internals
    async def _move(
        self,
        conn: AsyncConnection,
        resource_id: Any,
        act: Action,
        source: str,
        version: int | None,
        extra: dict[str, Any],
        why: tuple[str | None, str | None, dict[str, Any] | None],
    ) -> Row | None:
        """The conditional UPDATE and, if it matched, the history row and the wake-up."""
        store = store_of(conn)
        now = store.clock.now()
        new = self._stamp(dict(extra), now)
        one_statement = store.sql.one_statement_writes
        shape = (source, act.target_for(source), version is not None, tuple(sorted(new)))
        stmt = self._statements.get((*shape, store.sql.name))
        if stmt is None:
            stmt = self._move_statement(store, *shape)
            self._statements[(*shape, store.sql.name)] = stmt
        params = {f"v_{k}": v for k, v in new.items()}
        params["r_id"] = resource_id
        if version is not None:
            params["r_version"] = version
        actor, cause, metadata = why
        if one_statement:  # the UPDATE, its history row and its wake-up in one round trip
            params.update(
                history_params(
                    resource_type=self.resource_type,
                    action=act.name,
                    from_state=source,
                    at=now,
                    actor=actor,
                    cause=cause,
                    metadata=metadata,
                )
            )
            moved: Row | None = (await direct.execute(conn, stmt, params)).first()
            faults.fault_point(AFTER_TRANSITION)
            return moved
        row: Row | None = (await direct.execute(conn, stmt, params)).first()
        if row is not None:
            await self._recorded(store, conn, row, act.name, source, actor, cause, metadata)
            faults.fault_point(AFTER_TRANSITION)
        return row

    def _move_statement(
        self,
        store: Store,
        source: str,
        target: str,
        with_version: bool,
        columns: tuple[str, ...],
    ) -> Any:
        stmt = sa.update(self.table).where(
            self._id == sa.bindparam("r_id", type_=self._id.type), self._state == source
        )
        if with_version:
            stmt = stmt.where(self._version == sa.bindparam("r_version", type_=self._version.type))
        values: dict[str, Any] = {
            k: sa.bindparam(f"v_{k}", type_=self.table.c[k].type) for k in columns
        }
        values[self.state_column] = target
        values[self.version_column] = self._version + 1
        stmt = stmt.values(values)
        if not store.sql.one_statement_writes:
            return stmt.returning(*self.table.c)
        return store.sql.transition_with_history(
            stmt,
            self.table,
            id_column=self.id_column,
            state_column=self.state_column,
            version_column=self.version_column,
            channel=CHANNEL,
        )

    async def _current(self, conn: AsyncConnection, resource_id: Any) -> tuple[str, int] | None:
        row = (
            await conn.execute(sa.select(self._state, self._version).where(self._id == resource_id))
        ).first()
        return None if row is None else (row[0], row[1])

    async def _why(
        self, conn: AsyncConnection, resource_id: Any, act: Action, expected_version: int | None
    ) -> Exception:
        current = await self._current(conn, resource_id)
        if current is None:
            return NotFound(f"no {self.resource_type} {resource_id}")
        state, version = current
        if expected_version is not None and version != expected_version:
            return _stale(self.resource_type, resource_id, version, expected_version)
        if state not in act.sources:
            return _invalid(self.resource_type, resource_id, act.name, state)
        # matched on a re-read: the row moved while we tried (only multi-source CAS gets here)
        return _stale(self.resource_type, resource_id, version, expected_version)

    async def _recorded(
        self,
        store: Store,
        conn: AsyncConnection,
        row: Row,
        action: str,
        from_state: str | None,
        actor: str | None,
        cause: str | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        m = row._mapping
        resource_id = str(m[self.id_column])
        entry = history_row(
            resource_type=self.resource_type,
            resource_id=resource_id,
            action=action,
            from_state=from_state,
            to_state=m[self.state_column],
            version=m[self.version_column],
            at=store.clock.now(),
            actor=actor,
            cause=cause,
            metadata=metadata,
        )
        await store.notifier.write(
            conn, _HISTORY, entry, payload=f"{self.resource_type}:{resource_id}"
        )


def _stale(kind: str, resource_id: Any, version: int, expected: int | None) -> StaleVersion:
    return StaleVersion(
        f"{kind} {resource_id} is at version {version}, not {expected}",
        current_version=version,
    )


def _invalid(kind: str, resource_id: Any, action: str, state: str) -> InvalidTransition:
    return InvalidTransition(
        f"cannot {action} {kind} {resource_id} while it is {state}", state=state, action=action
    )
