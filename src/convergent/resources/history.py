"""The transition history: one row per change, written in the changing transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.ids import uuid7
from convergent.store import direct
from convergent.store.schema import resource_history

__all__ = ["HistoryEntry", "list_history", "record_history"]

_INSERT = resource_history.insert()


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded change of a resource."""

    action: str
    from_state: str | None
    to_state: str
    version: int
    at: datetime
    actor: str | None
    cause: str | None
    metadata: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "from": self.from_state,
            "to": self.to_state,
            "version": self.version,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "cause": self.cause,
            "metadata": self.metadata,
        }


async def record_history(
    conn: AsyncConnection,
    *,
    resource_type: str,
    resource_id: str,
    action: str,
    from_state: str | None,
    to_state: str,
    version: int,
    at: datetime,
    actor: str | None = None,
    cause: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    await direct.execute(
        conn,
        _INSERT,
        history_row(
            resource_type=resource_type,
            resource_id=resource_id,
            action=action,
            from_state=from_state,
            to_state=to_state,
            version=version,
            at=at,
            actor=actor,
            cause=cause,
            metadata=metadata,
        ),
    )


def history_row(
    *,
    resource_type: str,
    resource_id: str,
    action: str,
    from_state: str | None,
    to_state: str,
    version: int,
    at: datetime,
    actor: str | None,
    cause: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """The history table's row for one change (every column of the table)."""
    return {
        "id": uuid7(),
        "resource_type": resource_type,
        "resource_id": resource_id,
        "action": action,
        "from_state": from_state,
        "to_state": to_state,
        "version": version,
        "at": at,
        "actor": actor,
        "cause": cause,
        "meta": metadata,
    }


async def list_history(
    conn: AsyncConnection, resource_type: str, resource_id: str, *, limit: int = 1000
) -> list[HistoryEntry]:
    """The changes of one resource, oldest first."""
    h = resource_history.c
    rows = await conn.execute(
        sa.select(resource_history)
        .where(h.resource_type == resource_type, h.resource_id == resource_id)
        .order_by(h.version, h.id)
        .limit(limit)
    )
    return [
        HistoryEntry(
            action=r.action,
            from_state=r.from_state,
            to_state=r.to_state,
            version=r.version,
            at=r.at,
            actor=r.actor,
            cause=r.cause,
            metadata=r.meta,
        )
        for r in rows
    ]
