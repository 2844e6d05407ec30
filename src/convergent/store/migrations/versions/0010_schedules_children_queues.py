"""Schedules and their ticks, child runs, fleet queues and run priorities.

Revision ID: convergent_0010
Revises: convergent_0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0010"
down_revision = "convergent_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_schedules",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("workflow", sa.String(255), nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("every_seconds", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("args", ct.JSONType, nullable=True),
        sa.Column("queue", sa.String(64), nullable=True),
        sa.Column("spec", sa.String(1024), nullable=False),
        sa.Column("paused", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("next_at", ct.UTCDateTime(), nullable=True),
        sa.Column("triggered_at", ct.UTCDateTime(), nullable=True),
        sa.Column("last_tick_at", ct.UTCDateTime(), nullable=True),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_convergent_schedules"),
    )
    op.create_index("ix_convergent_schedules_next_at", "convergent_schedules", ["next_at"])
    op.create_table(
        "convergent_schedule_ticks",
        sa.Column("schedule", sa.String(255), nullable=False),
        sa.Column("tick_at", ct.UTCDateTime(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("manual", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("schedule", "tick_at", name="pk_convergent_schedule_ticks"),
    )
    op.create_table(
        "convergent_run_children",
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("parent_id", "seq", name="pk_convergent_run_children"),
    )
    op.create_index("ix_convergent_run_children_status", "convergent_run_children", ["status"])
    op.create_index("ix_convergent_run_children_child_id", "convergent_run_children", ["child_id"])
    op.create_table(
        "convergent_queues",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("rate_period", sa.Float(), nullable=True),
        sa.Column("tokens", sa.Float(), server_default="0", nullable=False),
        sa.Column("refilled_at", ct.UTCDateTime(), nullable=True),
        sa.Column("updated_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_convergent_queues"),
    )
    op.add_column(
        "convergent_runs",
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("convergent_runs") as batch:
        batch.drop_column("priority")
    op.drop_table("convergent_queues")
    op.drop_index("ix_convergent_run_children_child_id", "convergent_run_children")
    op.drop_index("ix_convergent_run_children_status", "convergent_run_children")
    op.drop_table("convergent_run_children")
    op.drop_table("convergent_schedule_ticks")
    op.drop_index("ix_convergent_schedules_next_at", "convergent_schedules")
    op.drop_table("convergent_schedules")
