"""PostgreSQL: a transition, its history row and its wake-up as ONE statement.

Data-modifying CTEs let the conditional UPDATE feed the history INSERT and ``pg_notify`` in a
single round trip, so a transition costs about what a plain UPDATE costs. SQLite has no DML in
CTEs; there the engine runs the UPDATE and the INSERT one after the other in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from convergent.ids import uuid7
from convergent.store.schema import resource_history
from convergent.store.types import JSONType, UTCDateTime

__all__ = ["history_params", "transition_statement"]


def transition_statement(
    update: sa.Update,
    table: sa.Table,
    *,
    id_column: str,
    state_column: str,
    version_column: str,
    channel: str | None,
) -> sa.Select[Any]:
    """``update`` plus its history row (and a NOTIFY on ``channel``); selects the new row.

    The history values are bound parameters (``HISTORY_PARAMS``), so one statement object serves
    every call and SQLAlchemy compiles it once.
    """
    moved = update.returning(*table.c).cte("moved")
    moved_id = sa.cast(moved.c[id_column], sa.String)
    h = resource_history.c
    recorded = (
        resource_history.insert()
        .from_select(
            [
                h.id,
                h.resource_type,
                h.resource_id,
                h.action,
                h.from_state,
                h.to_state,
                h.version,
                h.at,
                h.actor,
                h.cause,
                h.meta,
            ],
            sa.select(
                sa.bindparam("h_id", type_=sa.Uuid()),
                sa.bindparam("h_type", type_=sa.String()),
                moved_id,
                sa.bindparam("h_action", type_=sa.String()),
                sa.bindparam("h_from", type_=sa.String()),
                moved.c[state_column],
                moved.c[version_column],
                sa.bindparam("h_at", type_=UTCDateTime()),
                sa.bindparam("h_actor", type_=sa.String()),
                sa.bindparam("h_cause", type_=sa.String()),
                sa.bindparam("h_meta", type_=JSONType),
            ).select_from(moved),
        )
        .cte("recorded")
    )
    stmt = sa.select(*(moved.c[c.name] for c in table.c)).add_cte(recorded)
    if channel is None:
        return stmt.select_from(moved)
    payload = sa.bindparam("h_type_prefix", type_=sa.String()) + moved_id
    notified = sa.select(sa.func.pg_notify(channel, payload).label("sent")).select_from(moved)
    note = notified.cte("notified")
    return stmt.select_from(moved.join(note, sa.true()))


def history_params(
    *,
    resource_type: str,
    action: str,
    from_state: str | None,
    at: datetime,
    actor: str | None,
    cause: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    """The parameters ``transition_statement`` expects for its history row."""
    return {
        "h_id": uuid7(),
        "h_type": resource_type,
        "h_type_prefix": f"{resource_type}:",
        "h_action": action,
        "h_from": from_state,
        "h_at": at,
        "h_actor": actor,
        "h_cause": cause,
        "h_meta": metadata,
    }
