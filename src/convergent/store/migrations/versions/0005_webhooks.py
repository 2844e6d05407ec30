"""Webhooks: endpoints, messages, deliveries, attempts and operational events.

Revision ID: convergent_0005
Revises: convergent_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import convergent.store.types as ct

revision = "convergent_0005"
down_revision = "convergent_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "convergent_webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("event_types", ct.JSONType, nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(255), nullable=True),
        sa.Column("secrets", ct.JSONType, nullable=False),
        sa.Column("failing_since", ct.UTCDateTime(), nullable=True),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_webhook_endpoints"),
    )
    op.create_table(
        "convergent_webhook_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("payload", ct.JSONType, nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_webhook_messages"),
    )
    op.create_index(
        "ix_convergent_webhook_messages_created_at", "convergent_webhook_messages", ["created_at"]
    )
    op.create_table(
        "convergent_webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", ct.UTCDateTime(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ct.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["convergent_webhook_messages.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"], ["convergent_webhook_endpoints.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_webhook_deliveries"),
    )
    op.create_index(
        "ix_convergent_webhook_deliveries_status_due",
        "convergent_webhook_deliveries",
        ["status", "next_attempt_at"],
    )
    op.create_index(
        "ix_convergent_webhook_deliveries_endpoint",
        "convergent_webhook_deliveries",
        ["endpoint_id", "created_at"],
    )
    op.create_table(
        "convergent_webhook_attempts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response_snippet", sa.Text(), nullable=True),
        sa.Column("started_at", ct.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"], ["convergent_webhook_deliveries.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_webhook_attempts"),
    )
    op.create_index(
        "ix_convergent_webhook_attempts_delivery_id",
        "convergent_webhook_attempts",
        ["delivery_id"],
    )
    op.create_index(
        "ix_convergent_webhook_attempts_endpoint",
        "convergent_webhook_attempts",
        ["endpoint_id", "started_at"],
    )
    op.create_table(
        "convergent_webhook_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=True),
        sa.Column("delivery_id", sa.Uuid(), nullable=True),
        sa.Column("detail", ct.JSONType, nullable=False),
        sa.Column("created_at", ct.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_convergent_webhook_events"),
    )
    op.create_index(
        "ix_convergent_webhook_events_created_at", "convergent_webhook_events", ["created_at"]
    )


def downgrade() -> None:
    op.drop_table("convergent_webhook_events")
    op.drop_table("convergent_webhook_attempts")
    op.drop_table("convergent_webhook_deliveries")
    op.drop_table("convergent_webhook_messages")
    op.drop_table("convergent_webhook_endpoints")
