"""Foundation: idempotency keys, dead letters and the inbox.

Revision ID: convergent_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0001"
down_revision = None
branch_labels = ("convergent",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_idempotency_keys",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("locked_until", ct.UTCDateTime(), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", ct.JSONType, nullable=True),
        sa.Column("response_body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("completed_at", ct.UTCDateTime(), nullable=True),
        sa.Column("expires_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name="pk_convergent_idempotency_keys"),
    )
    op.create_index(
        "ix_convergent_idempotency_keys_expires_at", "convergent_idempotency_keys", ["expires_at"]
    )
    op.create_table(
        "convergent_dead_letters",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_ref", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=True),
        sa.Column("payload", ct.JSONType, nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(16), server_default="dead", nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("resolved_at", ct.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_dead_letters"),
    )
    op.create_index(
        "ix_convergent_dead_letters_status_source",
        "convergent_dead_letters",
        ["status", "source"],
    )
    op.create_table(
        "convergent_inbox",
        sa.Column("consumer", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("received_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="pk_convergent_inbox"),
    )
    op.create_index("ix_convergent_inbox_received_at", "convergent_inbox", ["received_at"])


def downgrade() -> None:
    op.drop_table("convergent_inbox")
    op.drop_table("convergent_dead_letters")
    op.drop_table("convergent_idempotency_keys")
