"""A user's own table (created per test) with a state machine bound to it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.resources import Action, ResourceTable, StateMachine
from convergent.store import Store
from convergent.store.types import UTCDateTime

user_metadata = sa.MetaData()
tickets = sa.Table(
    "res_test_tickets",
    user_metadata,
    sa.Column("ticket_id", sa.Uuid(), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rev", sa.Integer(), nullable=False),
    sa.Column("title", sa.String(64), nullable=True),
    sa.Column("tags", sa.String(255), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
)

MACHINE = StateMachine(
    "ticket",
    initial="open",
    actions=[
        Action("start", "open", "working"),
        Action("pause", "working", "open"),
        Action("close", ["open", "working"], "closed"),
        Action("drop", ["open", "working"], {"open": "dropped", "working": "abandoned"}),
    ],
    terminal=["closed", "dropped", "abandoned"],
)
# non-default column names on purpose: the engine must not assume id/state/version
TICKETS = ResourceTable(
    tickets, MACHINE, id_column="ticket_id", state_column="status", version_column="rev"
)


@pytest.fixture
async def resource(store: Store) -> ResourceTable:
    """The tickets table, fresh: SQLite databases are per test, PostgreSQL drops it between."""
    async with store.begin() as conn:
        await conn.run_sync(user_metadata.create_all)
    return TICKETS


async def new_ticket(store: Store, resource: ResourceTable, **values: object) -> sa.Row[object]:
    async with store.begin() as conn:
        row = await resource.create(conn, {"title": "t", **values})
    assert row is not None
    return row


async def state_of(conn: AsyncConnection, ticket_id: object) -> tuple[str, int]:
    row = (
        await conn.execute(
            sa.select(tickets.c.status, tickets.c.rev).where(tickets.c.ticket_id == ticket_id)
        )
    ).one()
    return row[0], row[1]
