"""Messages: the outbox, leases, the embedded broker's log and replies.

Revision ID: convergent_0003
Revises: convergent_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0003"
down_revision = "convergent_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("envelope", ct.JSONType, nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", ct.UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_outbox"),
    )
    op.create_index(
        "ix_convergent_outbox_next_attempt_at", "convergent_outbox", ["next_attempt_at"]
    )
    op.create_index("ix_convergent_outbox_partition_id", "convergent_outbox", ["partition", "id"])
    op.create_index(
        "ix_convergent_outbox_topic_key_id", "convergent_outbox", ["topic", "key", "id"]
    )
    op.create_table(
        "convergent_leases",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(64), nullable=True),
        sa.Column("token", sa.String(64), nullable=True),
        sa.Column("lease_until", ct.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_convergent_leases"),
    )
    op.create_table(
        "convergent_log",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("envelope", ct.JSONType, nullable=False),
        sa.Column("appended_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", "position", name="pk_convergent_log"),
    )
    op.create_index("ix_convergent_log_appended_at", "convergent_log", ["appended_at"])
    op.create_table(
        "convergent_log_heads",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name="pk_convergent_log_heads"),
    )
    op.create_table(
        "convergent_log_offsets",
        sa.Column("consumer_group", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", ct.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint(
            "consumer_group", "topic", "partition", name="pk_convergent_log_offsets"
        ),
    )
    op.create_table(
        "convergent_replies",
        sa.Column("correlation_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("envelope", ct.JSONType, nullable=False),
        sa.Column("received_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("correlation_id", name="pk_convergent_replies"),
    )
    op.create_index("ix_convergent_replies_received_at", "convergent_replies", ["received_at"])


def downgrade() -> None:
    op.drop_table("convergent_replies")
    op.drop_table("convergent_log_offsets")
    op.drop_table("convergent_log_heads")
    op.drop_table("convergent_log")
    op.drop_table("convergent_leases")
    op.drop_table("convergent_outbox")
