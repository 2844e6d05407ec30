"""`convergent.store.direct`: a prebuilt statement gives what SQLAlchemy gives, on both
databases; on SQLite (inline) and on asyncpg it never enters SQLAlchemy's execution path."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from convergent.store import Store
from convergent.store.direct import execute
from convergent.store.types import UTCDateTime

md = sa.MetaData()
things = sa.Table(
    "direct_test_things",
    md,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("data", sa.JSON, nullable=True),
    sa.Column("flag", sa.Boolean, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=True),
    sa.Column("note", sa.String(16), nullable=False, default="defaulted"),
)

SELECT = things.select().where(things.c.id == sa.bindparam("b_id"))
BUMP = (
    things.update()
    .where(things.c.id == sa.bindparam("b_id"))
    .values(n=things.c.n + 1, state=sa.bindparam("b_state"))
)
INSERT = sa.insert(things)
DELETE = things.delete().where(things.c.state == sa.bindparam("b_state"))
AT = datetime(2026, 12, 1, 12, 30, 15, 123456, tzinfo=UTC)


def row(i: int, **extra: object) -> dict[str, object]:
    return {
        "id": uuid.UUID(int=i),
        "state": "new",
        "n": i,
        "data": {"i": i, "tags": ["a", "b"]},
        "flag": i % 2 == 0,
        "at": AT,
        "note": "given",
        **extra,
    }


def straight_to_sqlite(db: Store) -> bool:
    """SQLite on the loop's thread (not with ``CONVERGENT_SQLITE_INLINE=0``)."""
    return db.sql.name == "sqlite" and bool(getattr(db.sql, "inline", False))


def straight_to_driver(db: Store) -> bool:
    """One statement skips SQLAlchemy's execution path: inline SQLite, or asyncpg."""
    return straight_to_sqlite(db) or db.sql.name == "postgresql"


@pytest.fixture
async def db(store: Store) -> AsyncIterator[Store]:
    async with _with_things(store):
        yield store


@pytest.fixture
async def pg_db(pg_url: str) -> AsyncIterator[Store]:
    """PostgreSQL alone: a server session to end, row locks that deadlock."""
    async with Store(pg_url) as store, _with_things(store):
        yield store


@contextlib.asynccontextmanager
async def _with_things(store: Store) -> AsyncIterator[None]:
    async with store.begin() as conn:
        await conn.run_sync(md.drop_all)
        await conn.run_sync(md.create_all)
    try:
        yield
    finally:
        async with store.begin() as conn:
            await conn.run_sync(md.drop_all)


@pytest.fixture
def through_sqlalchemy(db: Store) -> list[str]:
    """The statements that went through SQLAlchemy's execution path."""
    seen: list[str] = []

    def note(_c: object, _cur: object, statement: str, *_: object) -> None:
        if "direct_test_things" in statement:
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    return seen


async def test_rows_and_types_match_sqlalchemy(db: Store, through_sqlalchemy: list[str]) -> None:
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1), row(2)])
        got = (await execute(conn, SELECT, {"b_id": uuid.UUID(int=1)})).one()
    direct_statements = len(through_sqlalchemy)
    async with db.read() as conn:
        want = (await conn.execute(SELECT, {"b_id": uuid.UUID(int=1)})).one()
    assert tuple(got) == tuple(want)
    assert (got.id, got.data) == (uuid.UUID(int=1), {"i": 1, "tags": ["a", "b"]})
    assert (got.at, got.at.tzinfo, got.flag) == (AT, UTC, False)
    if straight_to_sqlite(db):
        assert direct_statements == 0, through_sqlalchemy  # both went straight to SQLite
    elif straight_to_driver(db):
        assert direct_statements == 1, through_sqlalchemy  # the batch, not the read
    else:
        assert direct_statements >= 2


async def test_update_with_values_of_its_own_and_rowcount(db: Store) -> None:
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1), row(2)])
        bumped = await execute(conn, BUMP, {"b_id": uuid.UUID(int=2), "b_state": "bumped"})
        missed = await execute(conn, BUMP, {"b_id": uuid.UUID(int=9), "b_state": "bumped"})
        after = (await execute(conn, SELECT, {"b_id": uuid.UUID(int=2)})).one()
    assert (bumped.rowcount, missed.rowcount) == (1, 0)
    assert (after.n, after.state) == (3, "bumped")


async def test_upsert_returning(db: Store) -> None:
    upsert = (
        db.sql.insert(things)
        .values(
            id=sa.bindparam("b_id"),
            state="new",
            n=sa.bindparam("b_n"),
            flag=True,
            note="x",
        )
        .on_conflict_do_update(
            index_elements=[things.c.id], set_={"n": things.c.n + sa.bindparam("b_n")}
        )
        .returning(things.c.n, things.c.id)
    )
    async with db.begin() as conn:
        first = (await execute(conn, upsert, {"b_id": uuid.UUID(int=5), "b_n": 2})).one()
        second = await execute(conn, upsert, {"b_id": uuid.UUID(int=5), "b_n": 3})
    assert (first.n, first.id) == (2, uuid.UUID(int=5))
    assert second.scalar() == 5


async def test_a_column_default_left_out_is_filled_in(db: Store) -> None:
    async with db.begin() as conn:
        await execute(conn, INSERT, {k: v for k, v in row(3).items() if k != "note"})
        got = (await execute(conn, SELECT, {"b_id": uuid.UUID(int=3)})).one()
    assert got.note == "defaulted"


async def test_errors_are_sqlalchemys(db: Store) -> None:
    async with db.begin() as conn:
        await execute(conn, INSERT, row(1))
    with pytest.raises(sa.exc.IntegrityError):
        async with db.begin() as conn:
            await execute(conn, INSERT, row(1))
    with pytest.raises(sa.exc.IntegrityError):  # a batch fails whole: its transaction rolls back
        async with db.begin() as conn:
            await execute(conn, INSERT, [row(2), row(1)])
    async with db.begin() as conn:
        left = (await execute(conn, sa.select(sa.func.count()).select_from(things), {})).scalar()
        deleted = await execute(conn, DELETE, {"b_state": "new"})
    assert (left, deleted.rowcount) == (1, 1)


async def test_a_missing_parameter_is_named(db: Store) -> None:
    async with db.begin() as conn:
        with pytest.raises(sa.exc.StatementError, match="b_id"):
            await execute(conn, SELECT, {})


async def test_list_parameters(db: Store, through_sqlalchemy: list[str]) -> None:
    among = things.select().where(things.c.id.in_(sa.bindparam("b_ids", expanding=True)))
    among = among.order_by(things.c.n)
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(i) for i in range(1, 6)])
        before = len(through_sqlalchemy)
        two = (await execute(conn, among, {"b_ids": [uuid.UUID(int=4), uuid.UUID(int=2)]})).all()
        three = await execute(conn, among, {"b_ids": [uuid.UUID(int=i) for i in (1, 3, 5)]})
        none = (await execute(conn, among, {"b_ids": []})).all()
        literal = things.select().where(things.c.n.in_([1, 3])).order_by(things.c.n)
        given = (await execute(conn, literal, {})).all()  # a list the statement carries
        # a list with a value beside it (numbered placeholders put the list's after it)
        mixed = among.where(things.c.state == sa.bindparam("b_state"))
        beside = await execute(conn, mixed, {"b_state": "new", "b_ids": [uuid.UUID(int=5)] * 2})
    assert [r.n for r in two] == [2, 4]
    assert [r.n for r in three] == [1, 3, 5]
    assert none == []
    assert [r.n for r in given] == [1, 3]
    assert [r.n for r in beside] == [5]
    if straight_to_driver(db):  # only the empty list went through SQLAlchemy
        assert len(through_sqlalchemy) - before == 1


async def test_a_batch_with_returning_gives_every_row_in_order(db: Store) -> None:
    insert = sa.insert(things).returning(things.c.id, things.c.n)
    async with db.begin() as conn:
        got = (await execute(conn, insert, [row(3), row(1), row(2)])).all()
    assert [(r.id, r.n) for r in got] == [(uuid.UUID(int=i), i) for i in (3, 1, 2)]


async def test_a_batch_outside_a_transaction_stays_one_statement(
    db: Store, through_sqlalchemy: list[str]
) -> None:
    async with db.autocommit() as conn:  # row by row it would commit each row on its own
        await execute(conn, INSERT, [row(1), row(2)])
    async with db.read() as conn:
        count = (await execute(conn, sa.select(sa.func.count()).select_from(things), {})).scalar()
    assert count == 2
    assert len(through_sqlalchemy) >= 1  # the batch went through SQLAlchemy on both databases


async def test_plans_stay_bounded(db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from convergent.store import direct

    monkeypatch.setattr(direct, "_plans", {})
    monkeypatch.setattr(direct, "_MAX_PLANS", 2)
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1), row(2), row(3)])
        for i in (1, 2, 3, 1):
            one = things.select().where(things.c.n == i)  # a new statement each time
            assert (await execute(conn, one, {})).one().n == i
    assert len(direct._plans) <= 2


COUNT = sa.select(sa.func.count()).select_from(things)


async def test_statements_belong_to_the_transaction_around_them(
    db: Store, through_sqlalchemy: list[str]
) -> None:
    """The first statement of a transaction may go straight to the driver: it must open the
    transaction on the server, so a rollback takes it back and a commit keeps it."""
    with pytest.raises(RuntimeError):
        async with db.begin() as conn:
            await execute(conn, INSERT, row(1))
            await execute(conn, BUMP, {"b_id": uuid.UUID(int=1), "b_state": "bumped"})
            raise RuntimeError("roll back")
    async with db.begin() as conn:
        await execute(conn, INSERT, row(2))
    async with db.autocommit() as conn:  # each statement commits on its own
        await execute(conn, INSERT, row(3))
    async with db.read() as conn:
        ids = (await execute(conn, sa.select(things.c.id).order_by(things.c.n), {})).scalars()
    assert ids == [uuid.UUID(int=2), uuid.UUID(int=3)]
    if straight_to_driver(db):
        assert through_sqlalchemy == []


async def test_a_lost_connection_is_unavailable_and_the_pool_recovers(pg_db: Store) -> None:
    """The server ends the session under a statement sent straight to the driver: the caller
    gets StoreUnavailable (a 503), as through SQLAlchemy, and the next transaction works."""
    from convergent.errors import StoreUnavailable

    db = pg_db
    with pytest.raises(StoreUnavailable):
        async with db.begin() as conn:
            pid = (await execute(conn, sa.select(sa.func.pg_backend_pid()), {})).scalar()
            async with db.autocommit() as other:
                await other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await execute(conn, COUNT, {})
    async with db.begin() as conn:
        await execute(conn, INSERT, row(1))
        assert (await execute(conn, COUNT, {})).scalar() == 1


async def test_a_conflict_is_a_store_conflict(pg_db: Store) -> None:
    """A deadlock between statements sent straight to the driver is StoreConflict (503 with
    Retry-After), as through SQLAlchemy; the victim's writes are gone, the other commits."""
    import asyncio

    from convergent.errors import StoreConflict

    db = pg_db
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1), row(2)])
    both_hold = asyncio.Barrier(2)

    async def bump(first: int, second: int) -> None:
        async with db.begin() as conn:
            await execute(conn, BUMP, {"b_id": uuid.UUID(int=first), "b_state": "x"})
            await both_hold.wait()
            await execute(conn, BUMP, {"b_id": uuid.UUID(int=second), "b_state": "x"})

    outcomes = await asyncio.gather(bump(1, 2), bump(2, 1), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "StoreConflict"]
    assert all(isinstance(o, StoreConflict) for o in outcomes if o is not None)
    async with db.read() as conn:
        ns = (await execute(conn, sa.select(things.c.n).order_by(things.c.id), {})).scalars()
    assert ns == [2, 3]  # one transaction's two bumps, none of the victim's


async def test_tasks_sharing_a_connection_take_turns(db: Store) -> None:
    """Two tasks on one connection (as through SQLAlchemy, whose adapter serialises them): both
    statements run, neither fails with "another operation is in progress"."""
    import asyncio

    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1), row(2)])
        bumps = [
            execute(conn, BUMP, {"b_id": uuid.UUID(int=i), "b_state": "bumped"}) for i in (1, 2)
        ]
        done = await asyncio.gather(*bumps)
    assert [d.rowcount for d in done] == [1, 1]
    async with db.read() as conn:
        states = (await execute(conn, sa.select(things.c.state), {})).scalars()
    assert states == ["bumped", "bumped"]


# -- begin_with: a transaction's first statement in its BEGIN's round trip ---------------------

FENCE = (
    sa.select(things.c.id)
    .where(things.c.id == sa.bindparam("b_id"), things.c.state == sa.bindparam("b_state"))
    .with_for_update(read=True)
)


async def test_begin_with_opens_the_transaction_in_one_round_trip(
    pg_db: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN and the fence go as one message; the row stays share-locked to the end of the
    transaction, and SQLAlchemy's rollback ends it (the write after it is gone)."""
    import asyncpg

    from convergent.store.direct import begin_with

    db = pg_db
    async with db.begin() as conn:
        await execute(conn, INSERT, row(1))
    sent: list[str] = []
    original = asyncpg.Connection.execute

    async def counted(self: asyncpg.Connection, query: str, *args: object, **kw: object) -> str:
        sent.append(query)
        status: str = await original(self, query, *args, **kw)
        return status

    monkeypatch.setattr(asyncpg.Connection, "execute", counted)
    with contextlib.suppress(RuntimeError):
        async with db.begin() as conn:
            found = await begin_with(conn, FENCE, {"b_id": uuid.UUID(int=1), "b_state": "new"})
            assert found == 1
            assert len(sent) == 1
            assert sent[0].startswith("BEGIN")
            assert sent[0].endswith("FOR SHARE")
            # the lock is the transaction's: another session cannot change the row meanwhile
            async with db.autocommit() as other:
                await other.execute(sa.text("SET lock_timeout = '50ms'"))
                with pytest.raises(sa.exc.DBAPIError, match="lock timeout"):
                    await other.execute(things.update().values(state="taken"))
            await execute(conn, BUMP, {"b_id": uuid.UUID(int=1), "b_state": "bumped"})
            raise RuntimeError  # roll back
    async with db.begin() as conn:
        got = (await execute(conn, SELECT, {"b_id": uuid.UUID(int=1)})).one()
        assert (got.state, got.n) == ("new", 1)
        assert await begin_with(conn, FENCE, {"b_id": uuid.UUID(int=1), "b_state": "new"}) is None


@pytest.mark.parametrize("state", ["it's", "back\\slash", "'; DROP TABLE direct_test_things; --"])
async def test_begin_with_quotes_its_values(pg_db: Store, state: str) -> None:
    from convergent.store.direct import begin_with

    db = pg_db
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1, state=state[:16]), row(2)])
    async with db.begin() as conn:
        params = {"b_id": uuid.UUID(int=1), "b_state": state[:16]}
        assert await begin_with(conn, FENCE, params) == 1
    async with db.begin() as conn:
        params = {"b_id": uuid.UUID(int=1), "b_state": state[:16] + "x"}
        assert await begin_with(conn, FENCE, params) == 0
    async with db.read() as conn:
        assert (await execute(conn, COUNT, {})).scalar() == 2


async def test_begin_with_times_and_nulls(pg_db: Store) -> None:
    from convergent.store.direct import begin_with

    db = pg_db
    at = things.select().where(things.c.at == sa.bindparam("b_at", type_=UTCDateTime()))
    async with db.begin() as conn:
        await execute(conn, INSERT, [row(1), row(2, at=None)])
    async with db.begin() as conn:
        assert await begin_with(conn, at, {"b_at": AT}) == 1
    async with db.begin() as conn:  # an INSERT's count; JSON, a flag and a NULL as literals
        assert await begin_with(conn, INSERT, row(3, state="dated", at=None)) == 1
    async with db.read() as conn:
        got = (await execute(conn, SELECT, {"b_id": uuid.UUID(int=3)})).one()
    assert (got.state, got.at, got.data) == ("dated", None, {"i": 3, "tags": ["a", "b"]})


async def test_begin_with_a_failing_statement_leaves_the_connection_usable(pg_db: Store) -> None:
    from convergent.store.direct import begin_with

    db = pg_db
    missing: sa.Select[Any] = sa.select(sa.column("id")).select_from(
        sa.table("direct_no_such_table")
    )
    with pytest.raises(sa.exc.ProgrammingError, match="direct_no_such_table"):
        async with db.begin() as conn:
            await begin_with(conn, missing.where(sa.column("id") == sa.bindparam("b")), {"b": 1})
    for _ in range(3):  # whichever pooled connection comes next works
        async with db.begin() as conn:
            await execute(conn, INSERT, row(_ + 1))
    async with db.read() as conn:
        assert (await execute(conn, COUNT, {})).scalar() == 3


async def test_begin_with_declines_what_it_cannot_send(db: Store) -> None:
    """SQLite, an autocommit connection, a value it does not quote: None (send it as usual)."""
    from convergent.store.direct import begin_with

    params = {"b_id": uuid.UUID(int=1), "b_state": "new"}
    async with db.begin() as conn:
        if db.sql.name == "sqlite":
            assert await begin_with(conn, FENCE, params) is None
        else:
            assert await begin_with(conn, FENCE, {**params, "b_state": 1.5}) is None
            assert await begin_with(conn, FENCE, params) == 0
    async with db.autocommit() as conn:
        assert await begin_with(conn, FENCE, params) is None


async def test_begin_with_keeps_the_connections_isolation_level(pg_db: Store) -> None:
    from convergent.store.direct import begin_with

    async with pg_db.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            assert await begin_with(conn, FENCE, {"b_id": uuid.UUID(int=1), "b_state": "x"}) == 0
            level = (await conn.execute(sa.text("SHOW transaction_isolation"))).scalar()
    assert level == "repeatable read"


async def test_begin_with_on_a_lost_connection_is_unavailable(pg_db: Store) -> None:
    """The server ended the session before the BEGIN went: StoreUnavailable (a 503), as for any
    statement, and the pool recovers."""
    from convergent.errors import StoreUnavailable
    from convergent.store.direct import begin_with

    db = pg_db
    with pytest.raises(StoreUnavailable):
        async with db.begin() as conn:
            raw = await conn.get_raw_connection()
            pid = raw.driver_connection.get_server_pid()  # type: ignore[union-attr]
            async with db.autocommit() as other:
                await other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await begin_with(conn, FENCE, {"b_id": uuid.UUID(int=1), "b_state": "new"})
    # a connection the client already knows is closed (the server restarted under the pool)
    with pytest.raises(StoreUnavailable):
        async with db.begin() as conn:
            raw = await conn.get_raw_connection()
            raw.driver_connection.terminate()  # type: ignore[union-attr]
            await begin_with(conn, FENCE, {"b_id": uuid.UUID(int=1), "b_state": "new"})
    async with db.begin() as conn:
        assert await begin_with(conn, FENCE, {"b_id": uuid.UUID(int=1), "b_state": "new"}) == 0
        await execute(conn, INSERT, row(1))
    async with db.read() as conn:
        assert (await execute(conn, COUNT, {})).scalar() == 1


# a textual statement built once, as the engine's batch statements are: arrays bound by name,
# one name used twice, rows named by the server
TEXT_UPSERT = sa.text(
    """
    WITH x AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:ns AS int[])) AS x(id, n)
    ), ins AS (
        INSERT INTO direct_test_things (id, state, n, flag, note)
        SELECT x.id, :state, x.n, false, 'text' FROM x
        WHERE x.id = ANY(CAST(:ids AS uuid[]))
        ON CONFLICT (id) DO UPDATE SET n = excluded.n
        RETURNING id, n
    )
    SELECT id, n, n * 2 AS twice FROM ins ORDER BY n
    """
)
TEXT_DELETE = sa.text("DELETE FROM direct_test_things WHERE state = :state")


async def test_a_textual_statement_gives_what_sqlalchemy_gives(pg_db: Store) -> None:
    """(PostgreSQL alone: the engine's textual statements are PostgreSQL's; on SQLite a text
    takes SQLAlchemy's path.)"""
    db = pg_db
    through_sqlalchemy: list[str] = []

    def note(_c: object, _cur: object, statement: str, *_: object) -> None:
        if "direct_test_things" in statement:
            through_sqlalchemy.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    ids = [uuid.UUID(int=i) for i in (3, 1, 2)]
    params = {"ids": ids, "ns": [30, 10, 20], "state": "texted"}
    async with db.begin() as conn:
        got = await execute(conn, TEXT_UPSERT, params)
        rows = got.all()
        gone = await execute(conn, TEXT_DELETE, {"state": "nothing"})
    assert len(through_sqlalchemy) == 0, through_sqlalchemy  # both straight to asyncpg
    assert [(r.id, r.n, r.twice) for r in rows] == [
        (uuid.UUID(int=1), 10, 20),
        (uuid.UUID(int=2), 20, 40),
        (uuid.UUID(int=3), 30, 60),
    ]
    assert gone.rowcount == 0
    async with db.begin() as conn:
        want = (await conn.execute(TEXT_UPSERT, {**params, "ns": [31, 11, 21]})).all()
        again = await execute(conn, TEXT_UPSERT, {**params, "ns": [32, 12, 22]})
        deleted = await execute(conn, TEXT_DELETE, {"state": "texted"})
    assert [tuple(r) for r in want] == [(ids[1], 11, 22), (ids[2], 21, 42), (ids[0], 31, 62)]
    assert again.scalars() == [ids[1], ids[2], ids[0]]
    assert deleted.rowcount == 3


async def test_a_textual_statement_fails_as_sqlalchemy_says(pg_db: Store) -> None:
    duplicate = sa.text(
        "INSERT INTO direct_test_things (id, state, n, flag, note) "
        "VALUES (:id, 'x', 1, false, 'n'), (:id, 'x', 1, false, 'n')"
    )
    with pytest.raises(sa.exc.IntegrityError):
        async with pg_db.begin() as conn:
            await execute(conn, duplicate, {"id": uuid.UUID(int=9)})
    with pytest.raises(sa.exc.StatementError, match="state"):  # a missing value is named
        async with pg_db.begin() as conn:
            await execute(conn, TEXT_DELETE, {})
    async with pg_db.begin() as conn:  # the pool's connection is fine afterwards
        assert (await execute(conn, TEXT_DELETE, {"state": "x"})).rowcount == 0
