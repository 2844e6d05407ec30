"""Parked messages: a consumer group's later messages of a key held behind its dead letter.

Revision ID: convergent_0007
Revises: convergent_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0007"
down_revision = "convergent_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_parked",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("consumer_group", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("envelope", ct.JSONType, nullable=False),
        sa.Column("dead_letter_id", sa.Uuid(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", ct.UTCDateTime(), nullable=True),
        sa.Column("parked_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_parked"),
    )
    op.create_index(
        "ix_convergent_parked_group_topic_key",
        "convergent_parked",
        ["consumer_group", "topic", "key", "id"],
    )
    op.create_index("ix_convergent_parked_dead_letter_id", "convergent_parked", ["dead_letter_id"])


def downgrade() -> None:
    op.drop_table("convergent_parked")
