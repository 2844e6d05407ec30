"""Resources: the transition history of convergent.resources.

Revision ID: convergent_0002
Revises: convergent_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0002"
down_revision = "convergent_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_resource_history",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("from_state", sa.String(64), nullable=True),
        sa.Column("to_state", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("at", ct.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("cause", sa.String(255), nullable=True),
        sa.Column("meta", ct.JSONType, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_resource_history"),
    )
    op.create_index(
        "ix_convergent_resource_history_resource",
        "convergent_resource_history",
        ["resource_type", "resource_id", "version"],
    )


def downgrade() -> None:
    op.drop_table("convergent_resource_history")
