"""Prebuilt statements sent straight to SQLite when its connection runs on the loop's thread.

SQLAlchemy's path for one statement (execution context, cache lookup, the async adapter's
greenlet switches, result metadata) costs about 100 µs of CPU; SQLite runs a primary-key read in
a few. The hot paths execute their statements built once through `execute`: on an inline SQLite
connection (`convergent.store.sqlite_inline`) the statement is compiled once by SQLAlchemy, and
its parameters and columns go through the same type processors SQLAlchemy would use; list
parameters (``IN``) get one ``?`` per value. Anything else takes SQLAlchemy's path: another
database, a statement with Python-side defaults to fill in, an empty list, a batch outside a
transaction, and any error (one statement is all or nothing in SQLite: run again through
SQLAlchemy, it fails the same way and is wrapped as callers expect, or waits for a busy lock).

On asyncpg the same goes for one statement at a time, textual ones included (docs/storage.md).
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Rows", "begin_with", "count_first", "execute", "literal_sql", "sent"]


@dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    names: tuple[str, ...]
    binders: tuple[Any, ...]  # a processor or None, per name
    preset: Mapping[str, Any]  # values the statement carries itself (``values(n=c.n + 1)``)
    row: Any  # a namedtuple type, or None for a statement without rows
    loaders: tuple[Any, ...]  # a processor or None, per column
    expanding: tuple[str, ...] = ()  # list parameters (``IN``): one ``?`` per value
    rendered: dict[tuple[int, ...], str] = field(default_factory=dict)  # by the lists' lengths
    # numbered placeholders ($1): the compiled statement renders each length of the lists, and
    # its order of values (a name, the index in its list or -1, the name's bind processor)
    compiled: Any = None
    plain: bool = False  # no column needs a processor: rows are the driver's values as they are
    numbered: dict[tuple[int, ...], tuple[str, tuple[tuple[str, int, Any], ...]]] = field(
        default_factory=dict
    )
    # a textual statement (asyncpg only): whether it answers rows is known once it has run;
    # its rows are the driver's values, as SQLAlchemy gives them for text, named by the server
    text: bool = False
    rows_named: dict[tuple[str, ...], Any] = field(default_factory=dict)


class _Fallback(Exception):
    """This call takes SQLAlchemy's path (a parameter missing, an empty list)."""


class Rows:
    """What the hot paths use of a ``Result``: rows with attribute access, and ``rowcount``."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise NoResultFound("no row") if not self._rows else MultipleResultsFound("rows")
        return self._rows[0]

    def one_or_none(self) -> Any:
        if len(self._rows) > 1:
            raise MultipleResultsFound("more than one row")
        return self._rows[0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


# (id of the dialect, id of the statement, parameter names of an INSERT) -> (statement, plan);
# the statement is held so its id is not reused while its plan is here. Statements built once
# come here; the oldest plans go past _MAX_PLANS (a cache rebuilt now and then stays bounded).
_plans: dict[tuple[int, int, frozenset[str] | None], tuple[Any, _Plan | None]] = {}
_MAX_PLANS = 4096


_sent = 0  # statements sent straight to the driver, for benchmarks that count round trips


def sent() -> int:
    """How many statements this process has sent straight to the driver so far."""
    return _sent


async def execute(
    conn: AsyncConnection,
    statement: sa.Executable,
    params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> Rows | sa.CursorResult[Any]:
    """``conn.execute(statement, params)``, straight to the driver where it can be (see
    above). ``params`` is one mapping, or a list of them."""
    global _sent
    if isinstance(params, Mapping):
        adapted = _asyncpg(conn)
        if adapted is not None:
            plan = _plan(conn, statement, params)
            if plan is not None:
                try:
                    rows = await _run_asyncpg(conn, adapted, plan, params)
                except _Fallback:
                    pass
                else:
                    _sent += 1
                    return rows
            return await conn.execute(statement, params)
    driver = _sqlite(conn)
    if driver is not None:
        many = not isinstance(params, Mapping)
        first = params if isinstance(params, Mapping) else (params[0] if params else None)
        if first is not None:
            plan = _plan(conn, statement, first)
            # a batch outside a transaction would commit row by row: SQLAlchemy's is one
            # statement, all or nothing
            if plan is not None and not (many and (plan.expanding or not driver.in_transaction)):
                try:
                    rows = _run(driver, plan, params, many)
                    _sent += 1
                    return rows
                except sqlite3.Error as exc:
                    if many:  # rows before the failing one are in: say it as SQLAlchemy would
                        raise sa.exc.DBAPIError.instance(
                            plan.sql, None, exc, sqlite3.Error, dialect=conn.dialect, ismulti=True
                        ) from exc
                    # one statement is all or nothing: SQLAlchemy's path fails the same way,
                    # wrapped as callers expect, or waits for a busy lock
                except _Fallback:
                    pass
    return await conn.execute(statement, params)


def _sqlite(conn: AsyncConnection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under an inline SQLite connection, else None."""
    sync = conn.sync_connection
    if sync is None or sync.dialect.name != "sqlite":
        return None
    adapted = sync.connection.dbapi_connection
    inline = getattr(adapted, "_connection", None)
    if not hasattr(inline, "run_now"):  # aiosqlite's own thread: its calls must stay there
        return None
    driver = getattr(inline, "_connection", None)
    return driver if isinstance(driver, sqlite3.Connection) else None


def _asyncpg(conn: AsyncConnection) -> Any:
    """The asyncpg adapter under ``conn`` where a statement may go straight to it, else None:
    inside SQLAlchemy's transaction (it commits or rolls back what is sent), or autocommit."""
    sync = conn.sync_connection
    if sync is None or sync.dialect.driver != "asyncpg" or sync.closed or sync.invalidated:
        return None
    adapted: Any = sync.connection.dbapi_connection
    if not hasattr(adapted, "_start_transaction"):
        return None
    if not sync.in_transaction() and not adapted.autocommit:
        return None  # SQLAlchemy begins its transaction with this statement
    return adapted


def _plan(conn: AsyncConnection, statement: Any, params: Mapping[str, Any]) -> _Plan | None:
    dialect = conn.dialect
    names = frozenset(params) if isinstance(statement, sa.Insert) else None
    key = (id(dialect), id(statement), names)
    found = _plans.get(key)
    if found is None:
        if len(_plans) >= _MAX_PLANS:
            del _plans[next(iter(_plans))]
        found = _plans[key] = (statement, _compile(dialect, statement, names))
    return found[1]


def _compile(dialect: Any, statement: Any, names: frozenset[str] | None) -> _Plan | None:
    if isinstance(statement, sa.TextClause) and dialect.driver == "asyncpg":
        return _compile_text(dialect, statement)
    if not isinstance(statement, sa.Select | sa.Insert | sa.Update | sa.Delete):
        return None  # the rest: their rows are not known from the statement
    compiled = statement.compile(
        dialect=dialect, column_keys=sorted(names) if names is not None else None
    )
    sql = compiled.string
    order = compiled.positiontup
    if order is None:
        return None
    preset: dict[str, Any] = {}
    binders = []
    expanding = []
    for name in order:
        bind = compiled.binds[name]
        if bind.callable is not None or bind.literal_execute:
            return None  # evaluated or rendered per call by SQLAlchemy
        if bind.expanding:
            expanding.append(name)
        if not bind.required:  # a value the statement carries; the caller's wins
            preset[name] = bind.effective_value
        binders.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
    table = getattr(statement, "table", None)
    if compiled.isinsert and names is not None and table is not None:
        for column in table.columns:  # a Python-side default the caller left out
            if column.key not in names and column.default is not None:
                return None
    if compiled.isupdate and table is not None and any(c.onupdate for c in table.columns):
        return None  # SQLAlchemy's execution context computes it
    columns = _columns(statement)
    row_type: Any = None
    loaders: tuple[Any, ...] = ()
    if columns:
        try:
            row_type = _row_type(tuple(c.key for c in columns))
        except ValueError:  # a column name that is no identifier
            return None
        try:
            loaders = tuple(_loader(c.type, dialect) for c in columns)
        except Exception:  # a type whose processor needs the driver's description of the row
            return None
    if sql.count("POSTCOMPILE") != len(expanding):
        return None  # something else SQLAlchemy renders per call
    numbered = compiled if expanding and dialect.paramstyle.startswith("numeric") else None
    return _Plan(
        sql,
        tuple(order),
        tuple(binders),
        preset,
        row_type,
        loaders,
        tuple(expanding),
        compiled=numbered,
        plain=not any(loaders),
    )


def _compile_text(dialect: Any, statement: sa.TextClause) -> _Plan | None:
    """A textual statement built once (the engine's batch statements): its values through
    their declared types' processors, its rows as the driver answers them."""
    compiled = statement.compile(dialect=dialect)
    order = compiled.positiontup
    if order is None or "POSTCOMPILE" in compiled.string:
        return None  # a list parameter, rendered per call by SQLAlchemy
    binders = []
    for name in order:
        bind = compiled.binds[name]
        if bind.callable is not None or bind.literal_execute or bind.expanding:
            return None
        binders.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
    return _Plan(compiled.string, tuple(order), tuple(binders), {}, None, (), text=True)


# PostgreSQL's numeric and float8: asyncpg's numeric processors pick by the column's type as
# the server describes it, which a statement's own column types tell here
_NUMERIC, _FLOAT8 = 1700, 701


def _loader(type_: Any, dialect: Any) -> Any:
    impl = type_.dialect_impl(dialect)
    coltype = None
    if dialect.driver == "asyncpg" and isinstance(type_, sa.Numeric):
        coltype = _FLOAT8 if isinstance(type_, sa.Float) else _NUMERIC
    return impl.result_processor(dialect, coltype)


def _row_type(keys: tuple[str, ...]) -> Any:
    """A named tuple with ``_mapping``, as SQLAlchemy's rows have."""
    base = namedtuple("Row", keys)  # type: ignore[misc]
    return type("Row", (base,), {"__slots__": (), "_mapping": property(base._asdict)})


def _columns(statement: Any) -> list[Any]:
    if isinstance(statement, sa.Select):
        return list(statement.selected_columns)
    returning = getattr(statement, "_returning", ())
    return list(statement.exported_columns) if returning else []


def _run(driver: sqlite3.Connection, plan: _Plan, params: Any, many: bool) -> Rows:
    if many and plan.row is None:
        cursor = driver.executemany(plan.sql, [_bound(plan, p) for p in params])
        return Rows([], cursor.rowcount)
    if many:  # RETURNING for each row, in order, as SQLAlchemy's batched insert gives them
        bound = [_bound(plan, p) for p in params]
        rows: list[Any] = []
        for values in bound:
            rows += _rows(plan, driver.execute(plan.sql, values))
        return Rows(rows, len(bound))
    cursor = driver.execute(_sql(plan, params), _bound(plan, params))
    if plan.row is None:
        return Rows([], cursor.rowcount)
    return Rows(_rows(plan, cursor), cursor.rowcount)


def _rows(plan: _Plan, cursor: sqlite3.Cursor) -> list[Any]:
    make, loaders = plan.row._make, plan.loaders
    return [
        make([v if f is None else f(v) for f, v in zip(loaders, raw, strict=True)])
        for raw in cursor.fetchall()
    ]


def _sql(plan: _Plan, params: Mapping[str, Any]) -> str:
    if not plan.expanding:
        return plan.sql
    lengths = tuple(len(_value(plan, params, name) or ()) for name in plan.expanding)
    if 0 in lengths:
        raise _Fallback  # SQLAlchemy renders an empty IN as a condition that is never true
    sql = plan.rendered.get(lengths)
    if sql is None:
        sql = plan.sql
        for name, n in zip(plan.expanding, lengths, strict=True):
            sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * n))
        plan.rendered[lengths] = sql
    return sql


def _bound(plan: _Plan, params: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for name, binder in zip(plan.names, plan.binders, strict=True):
        value = _value(plan, params, name)
        if name in plan.expanding:
            out += value if binder is None else [binder(v) for v in value]
        else:
            out.append(value if binder is None else binder(value))
    return out


def _value(plan: _Plan, params: Mapping[str, Any], name: str) -> Any:
    if name in params:
        return params[name]
    if name in plan.preset:
        return plan.preset[name]
    raise _Fallback  # SQLAlchemy names the missing parameter


# -- asyncpg ------------------------------------------------------------------------------------


async def _run_asyncpg(conn: AsyncConnection, adapted: Any, plan: _Plan, params: Any) -> Rows:
    sql, args = _numbered(plan, params)  # before anything is sent: _Fallback leaves no trace
    try:
        # the adapter's lock: statements on one connection go one at a time, as through
        # SQLAlchemy, even when tasks share it
        async with adapted._execute_mutex:
            if adapted._transaction is None and not adapted.autocommit:
                await adapted._start_transaction()  # SQLAlchemy's BEGIN, its isolation level
            driver = adapted._connection
            if plan.text:
                records, status, _ = await driver._execute(sql, args, 0, None, return_status=True)
                return _text_rows(plan, records, status)
            if plan.row is None:
                status = await driver.execute(sql, *args)
                return Rows([], _rowcount(status))
            records = await driver.fetch(sql, *args)
    except Exception as exc:
        await _raise_as_sqlalchemy(conn, adapted, sql, args, exc)
    make, loaders = plan.row._make, plan.loaders
    if plan.plain:
        return Rows([make(r) for r in records], len(records))
    rows = [
        make([v if f is None else f(v) for f, v in zip(loaders, r, strict=True)]) for r in records
    ]
    return Rows(rows, len(rows))


async def begin_with(
    conn: AsyncConnection,
    statement: sa.Executable,
    params: Mapping[str, Any],
    *,
    committed_before: Sequence[str] = (),
) -> int | None:
    """Begin ``conn``'s transaction on the server and run ``statement`` in the same round trip
    (PostgreSQL's simple protocol takes both in one message); the statement's row count.

    For a transaction's first statement whose rows are not wanted, only their count (a fence:
    ``SELECT … FOR SHARE`` found its row, or did not; an ``INSERT … ON CONFLICT DO NOTHING``
    went in, or did not). Its values go as literals, so only text, UUIDs, integers, booleans,
    times and NULL. None where this cannot be done: not asyncpg, the transaction
    already begun, another kind of value; then send it the usual way (`execute`).

    ``committed_before``: statements (`literal_sql`) to run first in the same message and commit
    on their own, before the BEGIN (an Idempotency-Key's claim, which other requests must see
    at once)."""
    adapted = _asyncpg(conn)
    if adapted is None or adapted.autocommit or adapted._transaction is not None:
        return None
    sql = _literal_sql(conn, statement, params)
    if sql is None:
        return None
    driver = adapted._connection
    async with adapted._execute_mutex:
        if driver._top_xact is not None or (not driver.is_closed() and driver.is_in_transaction()):
            return None
        first = "".join(f"{before}; " for before in committed_before)
        query = f"{first}{'COMMIT; ' if first else ''}{_begin_sql(adapted)}; {sql}"
        transaction = None
        try:
            # the transaction SQLAlchemy would start (its isolation level), begun by our message
            # (a connection the server closed raises here already)
            transaction = driver.transaction(
                isolation=adapted.isolation_level,
                readonly=adapted.readonly,
                deferrable=adapted.deferrable,
            )
            status = await driver.execute(query)
        except Exception as exc:
            # BEGIN went in: SQLAlchemy's rollback ends it
            if transaction is not None and not driver.is_closed() and driver.is_in_transaction():
                _started(adapted, driver, transaction)
            await _raise_as_sqlalchemy(conn, adapted, query, [], exc)
        _started(adapted, driver, transaction)
    return _rowcount(status)


async def count_first(
    conn: AsyncConnection, statement: sa.Executable, params: Mapping[str, Any]
) -> int:
    """How many rows ``statement`` found or wrote, sent with the transaction's BEGIN where
    `begin_with` can, else on its own: for a transaction's first statement."""
    found = await begin_with(conn, statement, params)
    if found is not None:
        return found
    result = await execute(conn, statement, params)
    return len(result.all()) if isinstance(statement, sa.Select) else int(result.rowcount)


def literal_sql(
    conn: AsyncConnection, statement: sa.Executable, params: Mapping[str, Any]
) -> str | None:
    """``statement`` as PostgreSQL text with its values as literals (see `begin_with`), or None
    where it cannot be (another database, a list parameter, another kind of value)."""
    return None if _asyncpg(conn) is None else _literal_sql(conn, statement, params)


def _literal_sql(
    conn: AsyncConnection, statement: sa.Executable, params: Mapping[str, Any]
) -> str | None:
    plan = _plan(conn, statement, params)
    if plan is None or plan.expanding or plan.text:  # a text may hold "$1" in its own literals
        return None
    try:
        values = [_literal(value) for value in _bound(plan, params)]
    except (_Fallback, TypeError):
        return None
    return _PLACEHOLDER.sub(lambda m: values[int(m.group(1)) - 1], plan.sql)


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _literal(value: Any) -> str:
    """``value`` as a PostgreSQL literal; TypeError for a kind this does not render."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, uuid.UUID):
        return f"'{value}'"
    if isinstance(value, datetime):  # the cast beside its placeholder says which kind
        return f"'{value.isoformat()}'"
    if isinstance(value, str) and "\x00" not in value:
        # an escape string: the same text whatever standard_conforming_strings says
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    raise TypeError(f"no literal for {type(value).__name__}")


def _begin_sql(adapted: Any) -> str:
    """asyncpg's BEGIN for the adapter's settings (`asyncpg.transaction.Transaction.start`)."""
    sql = "BEGIN"
    isolation = adapted.isolation_level
    if isolation and isolation != "autocommit":
        sql += " ISOLATION LEVEL " + str(isolation).replace("_", " ").upper()
    if adapted.readonly:
        sql += " READ ONLY"
    if adapted.deferrable:
        sql += " DEFERRABLE"
    return sql


def _started(adapted: Any, driver: Any, transaction: Any) -> None:
    """Mark ``transaction`` begun, as its own ``start()`` does, and hand it to SQLAlchemy's
    adapter, which commits or rolls it back."""
    driver._top_xact = transaction
    transaction._state = type(transaction._state).STARTED  # asyncpg's TransactionState
    adapted._transaction = transaction


def _text_rows(plan: _Plan, records: list[Any], status: bytes | None) -> Rows:
    count = _rowcount(status.decode()) if status else -1
    if not records:
        return Rows([], count)
    keys = tuple(records[0].keys())
    make = plan.rows_named.get(keys)
    if make is None:
        try:
            make = plan.rows_named[keys] = _row_type(keys)._make
        except ValueError:  # a column name that is no identifier: plain tuples
            make = plan.rows_named[keys] = tuple
    return Rows([make(r) for r in records], len(records) if count < 0 else count)


def _rowcount(status: str) -> int:
    """``UPDATE 3``, ``INSERT 0 3``, ``DELETE 0`` -> the count; -1 where the tag has none."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


def _numbered(plan: _Plan, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    if plan.compiled is None:
        return plan.sql, _bound(plan, params)
    lengths = tuple(len(_value(plan, params, name) or ()) for name in plan.expanding)
    if 0 in lengths:
        raise _Fallback  # SQLAlchemy renders an empty IN as a condition that is never true
    found = plan.numbered.get(lengths)
    if found is None:
        # it asks for every value; only the lists' lengths shape what it renders
        state = plan.compiled.construct_expanded_state({**plan.preset, **params})
        member = {
            expanded: (name, i)
            for name, names in state.parameter_expansion.items()
            for i, expanded in enumerate(names)
        }
        binders = dict(zip(plan.names, plan.binders, strict=True))
        values = []
        for name in state.positiontup:
            source, i = member.get(name, (name, -1))
            values.append((source, i, binders[source]))
        found = plan.numbered[lengths] = (state.statement, tuple(values))
    sql, order = found
    args: list[Any] = []
    for name, i, binder in order:
        value = _value(plan, params, name)
        if i >= 0:
            value = value[i]
        args.append(value if binder is None else binder(value))
    return sql, args


async def _raise_as_sqlalchemy(
    conn: AsyncConnection, adapted: Any, sql: str, args: list[Any], exc: Exception
) -> NoReturn:
    """Raise ``exc`` as SQLAlchemy's own path would: asyncpg's errors as the adapter's DBAPI
    errors wrapped in ``sqlalchemy.exc``; a lost connection invalidated; anything else as is."""
    dialect = conn.dialect
    error: Exception = exc
    try:
        adapted._handle_exception(exc)  # raises: translated, or as it was
    except Exception as translated:
        error = translated
    dbapi_error = dialect.loaded_dbapi.Error
    if not isinstance(error, dbapi_error):
        raise error
    lost = dialect.is_disconnect(error, adapted, None)
    if lost:
        await conn.invalidate()
    raise sa.exc.DBAPIError.instance(
        sql, args, error, dbapi_error, connection_invalidated=lost, dialect=dialect
    ) from exc
