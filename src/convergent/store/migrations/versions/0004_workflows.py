"""Workflows: runs, their checkpoints and the events sent to them.

Revision ID: convergent_0004
Revises: convergent_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0004"
down_revision = "convergent_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workflow", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("queue", sa.String(64), server_default="default", nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("args", ct.JSONType, nullable=False),
        sa.Column("result", ct.JSONType, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_at", ct.UTCDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", ct.UTCDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_runs"),
        sa.UniqueConstraint("workflow", "key", name="uq_convergent_runs_workflow_key"),
    )
    op.create_index("ix_convergent_runs_queue_next_at", "convergent_runs", ["queue", "next_at"])
    op.create_index("ix_convergent_runs_lease_until", "convergent_runs", ["lease_until"])
    op.create_table(
        "convergent_run_steps",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", ct.UTCDateTime(), nullable=True),
        sa.Column("result", ct.JSONType, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_convergent_run_steps"),
    )
    op.create_table(
        "convergent_run_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("payload", ct.JSONType, nullable=True),
        sa.Column("consumed_seq", sa.Integer(), nullable=True),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_run_events"),
        sa.UniqueConstraint(
            "run_id", "name", "dedupe_key", name="uq_convergent_run_events_run_id_name_dedupe_key"
        ),
    )


def downgrade() -> None:
    op.drop_table("convergent_run_events")
    op.drop_table("convergent_run_steps")
    op.drop_index("ix_convergent_runs_lease_until", "convergent_runs")
    op.drop_index("ix_convergent_runs_queue_next_at", "convergent_runs")
    op.drop_table("convergent_runs")
