"""Workflow runs: the code version a run started with, why a due run waits, and a step's first
attempt time in a column of its own (it was kept inside ``result``).

Revision ID: convergent_0009
Revises: convergent_0007
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import context, op

import convergent.store.types as ct

revision = "convergent_0009"
down_revision = "convergent_0007"
branch_labels = None
depends_on = None

_steps = sa.table(
    "convergent_run_steps",
    sa.column("run_id", sa.Uuid()),
    sa.column("seq", sa.Integer()),
    sa.column("status", sa.String()),
    sa.column("result", ct.JSONType),
    sa.column("first_attempt_at", ct.UTCDateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("convergent_runs") as batch:
        batch.add_column(sa.Column("version", sa.String(64), server_default="1", nullable=False))
        batch.add_column(sa.Column("waiting_for", sa.Text(), nullable=True))
    with op.batch_alter_table("convergent_run_steps") as batch:
        batch.add_column(sa.Column("first_attempt_at", ct.UTCDateTime(), nullable=True))
    if context.is_offline_mode():
        return  # printed DDL: steps still retrying then count their time limit from now on
    # steps still trying kept their first attempt time in ``result``: move it to its column
    conn = op.get_bind()
    s = _steps.c
    rows = conn.execute(
        sa.select(s.run_id, s.seq, s.result).where(s.status.in_(("started", "retrying")))
    ).all()
    for row in rows:
        first = _first_attempt(row.result)
        if first is not None:
            conn.execute(
                sa.update(_steps)
                .where(s.run_id == row.run_id, s.seq == row.seq)
                .values(first_attempt_at=first, result=None)
            )


def _first_attempt(result: Any) -> datetime | None:
    if isinstance(result, str):
        result = json.loads(result)
    if not isinstance(result, dict) or not result.get("first_attempt_at"):
        return None
    return datetime.fromisoformat(result["first_attempt_at"])


def downgrade() -> None:
    with op.batch_alter_table("convergent_run_steps") as batch:
        batch.drop_column("first_attempt_at")
    with op.batch_alter_table("convergent_runs") as batch:
        batch.drop_column("waiting_for")
        batch.drop_column("version")
