"""``Store.statement()``: one statement without BEGIN/COMMIT round trips on PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from convergent.outbox import emit
from convergent.store import Store
from convergent.store.schema import outbox
from tests.contract.transports.brokers import unique_topic


async def test_statement_reads_committed_rows(store: Store) -> None:
    async with store.begin() as conn:
        await emit(conn, unique_topic().name, "k", "t", {"n": 1})
    async with store.statement() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) == 1


async def test_statement_runs_each_statement_in_its_own_transaction_on_postgres(
    store: Store,
) -> None:
    if store.sql.single_writer:
        return  # SQLite: a read transaction, as read()
    ask = sa.text("SELECT pg_current_xact_id()::text")  # assigns an id to the current transaction
    async with store.statement() as conn:
        first, second = await conn.scalar(ask), await conn.scalar(ask)
    assert first != second  # autocommit: no transaction spans the two statements
    async with store.read() as conn:
        first, second = await conn.scalar(ask), await conn.scalar(ask)
    assert first == second
