"""The shop's own tables live in their own MetaData, beside convergent's (as a user's would)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["create_shop_tables", "metadata"]

metadata = sa.MetaData()


async def create_shop_tables(conn: AsyncConnection) -> None:
    """Create the shop's tables if missing (the reference app keeps its schema simple)."""
    await conn.run_sync(metadata.create_all)
