"""The store contract: every behaviour here holds on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from convergent.errors import StoreUnavailable
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import VERSION_TABLE, dead_letters, include_object, metadata
from convergent.store.types import UTCDateTime

user_metadata = sa.MetaData()
accounts = sa.Table(
    "store_test_accounts",
    user_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("balance", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=True),
)


async def test_migrate_is_idempotent(store: Store) -> None:
    await store.migrate()
    await store.migrate()
    async with store.read() as conn:
        version = (await conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))).scalar()
    assert version is not None


async def test_migrations_build_exactly_the_declared_schema(store: Store) -> None:
    def diff(sync_conn: sa.Connection) -> list[object]:
        ctx = MigrationContext.configure(
            sync_conn, opts={"include_object": include_object, "compare_type": False}
        )
        return list(compare_metadata(ctx, metadata))

    async with store.read() as conn:
        differences = await conn.run_sync(diff)
    assert differences == []


async def test_concurrent_migrations_from_many_processes_do_not_conflict(database_url: str) -> None:
    stores = [Store(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
    finally:
        for s in stores:
            await s.close()


async def test_caller_writes_and_ours_share_one_transaction(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(user_metadata.create_all)

    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await conn.execute(accounts.insert().values(id=1, balance=10))
            await conn.execute(
                dead_letters.insert().values(
                    id=uuid7(),
                    source="test",
                    source_ref="1",
                    name="t",
                    reason="r",
                    created_at=store.clock.now(),
                )
            )
            raise RuntimeError("handler failed")

    async with store.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(accounts))).scalar() == 0
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(dead_letters))
        ).scalar() == 0


async def test_datetimes_round_trip_as_aware_utc_and_order_correctly(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(user_metadata.create_all)
        base = datetime(2030, 1, 1, 12, tzinfo=UTC)
        plus_two = timezone_plus_two()
        await conn.execute(
            accounts.insert(),
            [
                {"id": 1, "balance": 0, "at": base},
                # 13:30 at +02:00 is 11:30 UTC: earlier than base despite the larger wall time
                {"id": 2, "balance": 0, "at": datetime(2030, 1, 1, 13, 30, tzinfo=plus_two)},
            ],
        )
    async with store.read() as conn:
        rows = (
            await conn.execute(sa.select(accounts.c.id, accounts.c.at).order_by(accounts.c.at))
        ).all()
        later = (
            (
                await conn.execute(
                    sa.select(accounts.c.id).where(accounts.c.at > base - timedelta(minutes=1))
                )
            )
            .scalars()
            .all()
        )
    assert [r.id for r in rows] == [2, 1]
    assert all(r.at.tzinfo is not None and r.at.utcoffset() == timedelta(0) for r in rows)
    assert rows[0].at == datetime(2030, 1, 1, 11, 30, tzinfo=UTC)
    assert later == [1]


def timezone_plus_two() -> tzinfo:
    from datetime import timezone

    return timezone(timedelta(hours=2))


async def test_naive_datetimes_are_refused(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(user_metadata.create_all)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        async with store.begin() as conn:
            await conn.execute(accounts.insert().values(id=1, balance=0, at=datetime(2030, 1, 1)))


async def test_concurrent_writers_all_commit(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(user_metadata.create_all)
        await conn.execute(accounts.insert().values(id=1, balance=0))

    async def add_one() -> None:
        async with store.begin() as conn:
            await conn.execute(
                accounts.update().where(accounts.c.id == 1).values(balance=accounts.c.balance + 1)
            )

    await asyncio.gather(*(add_one() for _ in range(40)))
    async with store.read() as conn:
        assert (await conn.execute(sa.select(accounts.c.balance))).scalar() == 40


async def test_notification_arrives_after_commit_and_not_after_rollback(store: Store) -> None:
    async with store.notifier.subscribe("store_test") as sub:
        with pytest.raises(RuntimeError):
            async with store.begin() as conn:
                await store.notifier.notify(conn, "store_test", "rolled-back")
                raise RuntimeError
        assert await sub.wait(0.3) is False

        async with store.begin() as conn:
            for _ in range(100):  # once per transaction, however often asked
                await store.notifier.notify(conn, "store_test", "a")
        assert await sub.wait(5) is True
        assert sub.drain() == ["a"]


async def test_unreachable_database_raises_store_unavailable(tmp_path: object) -> None:
    store = Store("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            async with store.begin():
                pass
    finally:
        await store.close()


async def test_a_lost_connection_surfaces_as_store_unavailable_not_a_rollback_error(
    store: Store,
) -> None:
    with pytest.raises(StoreUnavailable):
        async with store.begin() as conn:
            await store.notifier.notify(conn, "store_test")
            # what a database restart does mid-transaction: the driver fails, SQLAlchemy
            # invalidates the connection and raises; the rollback then runs on a dead connection
            await conn.invalidate()
            raise sa.exc.DBAPIError(
                "SELECT 1", None, Exception("gone"), connection_invalidated=True
            )
    async with store.read() as conn:  # and the pool recovers
        assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1


async def test_listen_comes_back_after_its_connection_is_killed(pg_url: str) -> None:
    """A PostgreSQL restart drops the LISTEN connection; wake-ups resume once it is back."""
    async with Store(pg_url) as store, store.notifier.subscribe("store_relisten") as sub:
        async with store.begin() as conn:
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND query ILIKE 'LISTEN%'"
                )
            )
        assert await sub.wait(10) is True  # the wake-up sent when LISTEN is restored
        sub.drain()
        async with store.begin() as conn:
            await store.notifier.notify(conn, "store_relisten", "after")
        assert await sub.wait(5) is True
        assert sub.drain() == ["after"]


async def test_a_database_that_is_shutting_down_is_unavailable_for_every_kind_of_connection(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg says "the database system is shutting down" at connect time: a DBAPIError that
    is not an invalidated connection. It must read as StoreUnavailable (a 503), never a 500."""

    async def refuse(_engine: object) -> None:
        raise sa.exc.DBAPIError("connect", None, Exception("the database system is shutting down"))

    monkeypatch.setattr(type(store.engine), "connect", refuse)
    with pytest.raises(StoreUnavailable):
        async with store.autocommit():
            pass
    with pytest.raises(StoreUnavailable):
        async with store.begin():
            pass


async def test_create_database_makes_an_empty_one_beside_replacing_its_namesake(
    store: Store,
) -> None:
    name = f"{Path(store.url.database or 'x').stem}_beside"
    for _ in range(2):  # the second call replaces the first, migrated one
        url = await store.create_database(name)
        async with Store(url) as beside:
            async with beside.read() as conn:
                tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            assert tables == []
            await beside.migrate()
    if not store.sql.single_writer:  # a server database outlives the test: drop it
        async with store.autocommit() as conn:
            await conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def test_autocommit_commits_each_statement(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(user_metadata.drop_all)
        await conn.run_sync(user_metadata.create_all)
    try:
        async with store.autocommit() as conn:
            await conn.execute(
                accounts.insert(), [{"id": 1, "balance": 5}, {"id": 2, "balance": 7}]
            )
            await conn.execute(accounts.update().where(accounts.c.id == 1).values(balance=6))
        async with store.read() as conn:
            balances = (
                await conn.execute(sa.select(accounts.c.balance).order_by(accounts.c.id))
            ).all()
        assert [b for (b,) in balances] == [6, 7]
    finally:
        async with store.begin() as conn:
            await conn.run_sync(user_metadata.drop_all)


async def test_a_deadlock_victim_raises_store_conflict_and_the_other_commits(pg_url: str) -> None:
    """PostgreSQL aborts one of two transactions that wait on each other: the victim is a
    `StoreConflict` (503 with Retry-After, nothing written), not a 500."""
    from convergent.errors import StoreConflict
    from convergent.http.problem import problem_for

    bump = sa.text("UPDATE deadlock_probe SET n = n + 1 WHERE id = :id")
    async with Store(pg_url) as store:
        async with store.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE deadlock_probe (id int PRIMARY KEY, n int)"))
            await conn.execute(sa.text("INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)"))
        try:
            locked = {1: asyncio.Event(), 2: asyncio.Event()}

            async def crosswise(mine: int, other: int) -> None:
                async with store.begin() as conn:
                    await conn.execute(sa.text("SET LOCAL deadlock_timeout = '50ms'"))
                    await conn.execute(bump, {"id": mine})
                    locked[mine].set()
                    await locked[other].wait()
                    await conn.execute(bump, {"id": other})

            results = await asyncio.gather(crosswise(1, 2), crosswise(2, 1), return_exceptions=True)
            conflicts = [r for r in results if isinstance(r, StoreConflict)]
            assert len(conflicts) == 1, results
            assert results.count(None) == 1, results
            problem = problem_for(conflicts[0])
            assert (problem.status, problem.headers["Retry-After"]) == (503, "1")
            async with store.read() as conn:  # the survivor's two bumps, none of the victim's
                rows = (await conn.execute(sa.text("SELECT sum(n) FROM deadlock_probe"))).scalar()
            assert rows == 2
        finally:
            async with store.begin() as conn:
                await conn.execute(sa.text("DROP TABLE deadlock_probe"))
