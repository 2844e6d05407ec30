"""`NotifyingWrite`: rows and their wake-up commit together; on PostgreSQL in one round trip."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from convergent.store import Store
from convergent.store.notify import NotifyingWrite

md = sa.MetaData()
parents = sa.Table(
    "notifying_parents",
    md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("data", sa.JSON, nullable=False),
)
children = sa.Table(
    "notifying_children",
    md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("parent_id", sa.Integer, sa.ForeignKey("notifying_parents.id"), nullable=False),
)
CHANNEL = "notifying_test"
ONE = NotifyingWrite(parents, ["id", "data"], CHANNEL)
BOTH = NotifyingWrite(parents, ["id", "data"], CHANNEL, then=(children, ["id", "parent_id"]))


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements asyncpg sends (PostgreSQL), as direct sends them."""
    sent: list[str] = []
    for name in ("execute", "fetch"):
        original = getattr(asyncpg.Connection, name)

        async def counted(self: Any, query: str, *args: Any, _o: Any = original, **kw: Any) -> Any:
            sent.append(query)
            return await _o(self, query, *args, **kw)

        monkeypatch.setattr(asyncpg.Connection, name, counted)
    return sent


async def _tables(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(md.drop_all)
        await conn.run_sync(md.create_all)


async def test_rows_and_wake_up_commit_together_or_not_at_all(store: Store) -> None:
    await _tables(store)
    async with store.notifier.subscribe(CHANNEL) as sub:
        with pytest.raises(RuntimeError):
            async with store.begin() as conn:
                await store.notifier.write(
                    conn, BOTH, {"id": 1, "data": {}}, {"id": 1, "parent_id": 1}, payload="first"
                )
                raise RuntimeError
        async with store.begin() as conn:
            await store.notifier.write(
                conn, BOTH, {"id": 2, "data": {"n": 2}}, {"id": 2, "parent_id": 2}, payload="second"
            )
        assert await sub.wait(5) is True
        # wake-ups arrive in commit order: the rolled-back one would have come first
        assert sub.drain() == ["second"]
    async with store.read() as conn:
        assert (await conn.execute(sa.select(parents.c.id, parents.c.data))).all() == [
            (2, {"n": 2})
        ]
        assert (await conn.execute(sa.select(children.c.parent_id))).scalars().all() == [2]


async def test_the_second_row_must_name_its_parent(store: Store) -> None:
    await _tables(store)
    with pytest.raises(sa.exc.IntegrityError):
        async with store.begin() as conn:
            if store.sql.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA foreign_keys = ON")
            await store.notifier.write(conn, BOTH, {"id": 1, "data": {}}, {"id": 1, "parent_id": 9})


async def test_one_statement_on_postgresql_then_plain_inserts(
    pg_url: str, round_trips: list[str]
) -> None:
    async with Store(pg_url) as store:
        await _tables(store)
        async with store.notifier.subscribe(CHANNEL) as sub:
            async with store.begin() as conn:
                await conn.execute(sa.text("SELECT 1"))  # the transaction's BEGIN, not counted
                round_trips.clear()
                both = ({"id": 1, "data": {}}, {"id": 1, "parent_id": 1})
                await store.notifier.write(conn, BOTH, *both)
                assert len(round_trips) == 1
                assert "pg_notify" in round_trips[0]
                # the same wake-up is already on its way: the row alone
                await store.notifier.write(conn, ONE, {"id": 2, "data": {}})
                assert len(round_trips) == 2
                assert "pg_notify" not in round_trips[1]
                # a NOTIFY of its own goes straight to the driver too
                await store.notifier.notify(conn, "notifying_other")
                assert len(round_trips) == 3
                assert "pg_notify" in round_trips[2]
            assert await sub.wait(5) is True
            assert sub.drain() == [""]


async def test_a_write_for_two_tables_needs_both_rows(store: Store) -> None:
    async with store.begin() as conn:
        with pytest.raises(TypeError, match="inserts 2 rows"):
            await store.notifier.write(conn, BOTH, {"id": 1, "data": {}})
