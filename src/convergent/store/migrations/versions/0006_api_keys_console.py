"""API keys, operator actions, and the indexes the operator console reads by.

Revision ID: convergent_0006
Revises: convergent_0005

The new indexes on ``convergent_runs`` are built in the migration's transaction, which blocks
writes to the table while it runs: on a large database apply it in a quiet moment.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0006"
down_revision = "convergent_0005"
branch_labels = None
depends_on = None

_IN_PROGRESS = sa.text("status = 'in_progress'")


def upgrade() -> None:
    op.create_table(
        "convergent_api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", ct.UTCDateTime(), nullable=True),
        sa.Column("last_used_at", ct.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_api_keys"),
        sa.UniqueConstraint("name", name="uq_convergent_api_keys_name"),
        sa.UniqueConstraint("prefix", name="uq_convergent_api_keys_prefix"),
    )
    op.create_table(
        "convergent_operator_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", ct.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_kind", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(255), nullable=False),
        sa.Column("params", ct.JSONType, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_operator_actions"),
    )
    op.create_index(
        "ix_convergent_operator_actions_target",
        "convergent_operator_actions",
        ["target_kind", "target_id", "at"],
    )
    op.create_index("ix_convergent_runs_status_id", "convergent_runs", ["status", "id"])
    op.create_index("ix_convergent_runs_key", "convergent_runs", ["key"])
    op.create_index(
        "ix_convergent_idempotency_keys_in_progress",
        "convergent_idempotency_keys",
        ["created_at"],
        postgresql_where=_IN_PROGRESS,
        sqlite_where=_IN_PROGRESS,
    )


def downgrade() -> None:
    op.drop_index("ix_convergent_idempotency_keys_in_progress", "convergent_idempotency_keys")
    op.drop_index("ix_convergent_runs_key", "convergent_runs")
    op.drop_index("ix_convergent_runs_status_id", "convergent_runs")
    op.drop_index("ix_convergent_operator_actions_target", "convergent_operator_actions")
    op.drop_table("convergent_operator_actions")
    op.drop_table("convergent_api_keys")
