"""Insert-once by primary key, the building block of every idempotent shop service."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store import direct, store_of

__all__ = ["insert_once"]


async def insert_once(conn: AsyncConnection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert ``values`` unless a row with the same key exists; True if this call inserted it.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction, then
    does nothing if that one committed: two callers never both see True.
    """
    sql = store_of(conn).sql
    statement = sql.once(("insert_once", table), lambda: sql.insert(table).on_conflict_do_nothing())
    result = await direct.execute(conn, statement, values)  # the VALUES are the keys of ``values``
    return bool(result.rowcount)
