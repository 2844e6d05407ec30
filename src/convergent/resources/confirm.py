"""Server-created idempotency: create a pending record, then confirm it exactly once."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import InvalidTransition
from convergent.resources.table import ResourceTable, Row

__all__ = ["confirm_once"]


async def confirm_once(
    resource: ResourceTable,
    conn: AsyncConnection,
    resource_id: Any,
    *,
    action: str = "confirm",
    actor: str | None = None,
) -> tuple[Row, bool]:
    """Apply ``action`` once; a repeat returns the current row and False instead of failing.

    The id the server handed out is the idempotency key: however often the client retries the
    confirmation, the action runs one time. An action that never ran and is not allowed now is
    still an InvalidTransition.
    """
    try:
        return await resource.transition(conn, resource_id, action, actor=actor), True
    except InvalidTransition:
        entries = await resource.history(conn, resource_id)
        if not any(e.action == action for e in entries):
            raise
    row = await resource.get(conn, resource_id)
    assert row is not None  # InvalidTransition means the row exists; rows are never deleted here
    return row, False
