"""Read models fed by entity topics: upsert the latest state, delete on a tombstone."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.messages import Message
from convergent.store import store_of

__all__ = ["apply_entity", "delete_entity", "upsert_entity"]


async def upsert_entity(
    conn: AsyncConnection, table: sa.Table, key_column: str, key: str, values: dict[str, Any]
) -> None:
    """Insert or replace the row whose ``key_column`` is ``key`` (unknown fields are ignored)."""
    known = {c.name for c in table.columns}
    row = {k: v for k, v in values.items() if k in known}
    row[key_column] = key
    stmt = store_of(conn).sql.insert(table).values(**row)
    updates = {k: stmt.excluded[k] for k in row if k != key_column}
    if updates:
        await conn.execute(stmt.on_conflict_do_update(index_elements=[key_column], set_=updates))
    else:
        await conn.execute(stmt.on_conflict_do_nothing())


async def delete_entity(conn: AsyncConnection, table: sa.Table, key_column: str, key: str) -> None:
    await conn.execute(sa.delete(table).where(table.c[key_column] == key))


async def apply_entity(
    conn: AsyncConnection, table: sa.Table, message: Message, *, key_column: str = "id"
) -> None:
    """Apply one entity-topic message: tombstone → delete, otherwise upsert ``data``."""
    if message.is_tombstone:
        await delete_entity(conn, table, key_column, message.key)
    else:
        await upsert_entity(conn, table, key_column, message.key, dict(message.data))
