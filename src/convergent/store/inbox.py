"""The inbox: "have I handled this message?" answered in the handler's own transaction.

Recording the message id and applying its effect commit together, so a redelivered message is
seen as a duplicate exactly when its first delivery took effect.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.store import direct
from convergent.store.engine import store_of
from convergent.store.schema import inbox

__all__ = ["purge_inbox", "record_once"]


async def record_once(conn: AsyncConnection, consumer: str, message_id: str, now: datetime) -> bool:
    """Record ``message_id`` for ``consumer``; False if it was already recorded (a duplicate)."""
    values = {"consumer": consumer, "message_id": message_id, "received_at": now}
    sql = store_of(conn).sql
    stmt = sql.once("inbox.record", lambda: sql.insert(inbox).on_conflict_do_nothing())
    # the handler's transaction begins with it: on PostgreSQL in the BEGIN's round trip
    return bool(await direct.count_first(conn, stmt, values))


async def purge_inbox(conn: AsyncConnection, older_than: datetime) -> int:
    """Forget ids received before ``older_than`` (keep them longer than any redelivery window)."""
    result = await conn.execute(sa.delete(inbox).where(inbox.c.received_at < older_than))
    return int(result.rowcount)
