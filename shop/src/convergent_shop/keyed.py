"""Insert-once by primary key, the building block of every idempotent shop service."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["insert_once"]


async def insert_once(conn: AsyncConnection, table: sa.Table, values: dict[str, Any]) -> bool:
    """Insert ``values`` unless a row with the same key exists; True if this call inserted it.

    On PostgreSQL a concurrent insert of the same key waits for the other transaction, then
    does nothing if that one committed: two callers never both see True.
    """
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    result = await conn.execute(insert(table).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)
