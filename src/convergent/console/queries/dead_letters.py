"""The Dead letters page: one list for every source (outbox, consumer, workflow, webhook)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.console.queries.paging import Page, decode_cursor, encode_cursor
from convergent.store.schema import dead_letters

__all__ = ["SOURCES", "LetterFilter", "find_letters", "letter_ids"]

SOURCES = ("outbox", "consumer", "workflow", "webhook")
_STATUSES = ("dead", "retried", "discarded")


@dataclass(frozen=True)
class LetterFilter:
    source: str | None = None
    status: str | None = "dead"  # None: every status
    name: str | None = None  # topic, workflow or endpoint
    key: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        d = dead_letters.c
        out = []
        if self.source:
            out.append(d.source == self.source)
        if self.status in _STATUSES:
            out.append(d.status == self.status)
        if self.name:
            out.append(d.name == self.name.strip())
        if self.key:
            out.append(d.key == self.key.strip())
        return out


async def find_letters(
    conn: AsyncConnection, f: LetterFilter, *, cursor: str | None = None, limit: int = 50
) -> Page[Any]:
    """Newest first (ids are UUIDv7); the page also says how many match in all."""
    d = dead_letters.c
    stmt = (
        sa.select(
            d.id,
            d.source,
            d.name,
            d.key,
            d.reason,
            d.attempts,
            d.status,
            d.created_at,
            d.resolved_at,
            d.source_ref,
        )
        .where(*f.where())
        .order_by(d.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        (last,) = decode_cursor(cursor, 1)
        stmt = stmt.where(d.id < uuid.UUID(last))
    rows = list((await conn.execute(stmt)).all())
    total = await conn.scalar(
        sa.select(sa.func.count()).select_from(dead_letters).where(*f.where())
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor([rows[-1].id]) if more else None, {"total": int(total or 0)})


async def letter_ids(conn: AsyncConnection, f: LetterFilter, limit: int = 1000) -> list[uuid.UUID]:
    """The ids a bulk action by filter applies to (still dead, oldest first, at most ``limit``)."""
    d = dead_letters.c
    where = [w for w in f.where()] + [d.status == "dead"]
    rows = await conn.execute(sa.select(d.id).where(*where).order_by(d.id).limit(limit))
    return [r.id for r in rows]
