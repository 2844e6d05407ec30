"""Dialect-specific claiming: the one place that knows how each database hands out work.

PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so many workers on many machines share rows with no
coordinator. SQLite: one writer at a time (``BEGIN IMMEDIATE``, see ``Store.begin``), so a plain
select inside the write transaction is already exclusive.
"""

from __future__ import annotations

from typing import TypeVar

import sqlalchemy as sa

__all__ = ["lock_for_claim", "lock_row"]

S = TypeVar("S", bound=sa.Select)  # type: ignore[type-arg]


def lock_for_claim(stmt: S, dialect: str, of: sa.Table | None = None) -> S:
    """Make ``stmt`` claim rows no other claimer holds (skips rows locked by others).

    ``of`` names the table whose rows are claimed when ``stmt`` joins others (those stay
    unlocked).
    """
    if dialect == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=of)
    return stmt


def lock_row(stmt: S, dialect: str) -> S:
    """Make ``stmt`` wait for and lock the selected rows (read-modify-write on PostgreSQL)."""
    if dialect == "postgresql":
        return stmt.with_for_update()
    return stmt
