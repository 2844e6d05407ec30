"""convergent's own tables (all prefixed ``convergent_``), as SQLAlchemy Core.

Alembic migrations in ``store/migrations`` create exactly these; a test checks that the
migrations and this module agree. Users' tables live beside ours, in their own MetaData.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from convergent.store.types import JSONType, UTCDateTime

__all__ = [
    "VERSION_TABLE",
    "dead_letters",
    "idempotency_keys",
    "inbox",
    "include_object",
    "metadata",
    "webhook_attempts",
    "webhook_deliveries",
    "webhook_endpoints",
    "webhook_events",
    "webhook_messages",
]

VERSION_TABLE = "convergent_alembic_version"


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter: users' tables live in the same database; we only ever look at ours."""
    if type_ == "table":
        return bool(name and name.startswith("convergent_") and name != VERSION_TABLE)
    return True


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# foundation (migration 0001) -----------------------------------------------------------------

#: one row per (scope, key): the lock while the first request runs, then its stored response
idempotency_keys = sa.Table(
    "convergent_idempotency_keys",
    metadata,
    sa.Column("scope", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # in_progress | completed
    sa.Column("locked_until", UTCDateTime(), nullable=True),
    sa.Column("response_status", sa.Integer(), nullable=True),
    sa.Column("response_headers", JSONType, nullable=True),
    sa.Column("response_body", sa.LargeBinary(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

#: everything that gave up, from every source (outbox, consumer, workflow, webhook)
dead_letters = sa.Table(
    "convergent_dead_letters",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("source_ref", sa.String(255), nullable=False),  # id of the row in its source
    sa.Column("name", sa.String(255), nullable=False),  # topic, workflow or endpoint
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("payload", JSONType, nullable=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column(
        "status", sa.String(16), nullable=False, server_default="dead"
    ),  # dead|retried|discarded
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Index("ix_convergent_dead_letters_status_source", "status", "source"),
)

#: messages already handled, per consumer: a duplicate delivery finds its row and is skipped
inbox = sa.Table(
    "convergent_inbox",
    metadata,
    sa.Column("consumer", sa.String(255), primary_key=True),
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
)

# resources (migration 0002) ------------------------------------------------------------------

# messages: outbox, embedded log, inbox (migration 0003) --------------------------------------

# workflows (migration 0004) ------------------------------------------------------------------

# webhooks (migration 0005) -------------------------------------------------------------------

#: callback destinations; ``secrets`` holds every signing secret still valid (rotation grace)
webhook_endpoints = sa.Table(
    "convergent_webhook_endpoints",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.Text(), nullable=False, server_default=""),
    sa.Column("event_types", JSONType, nullable=True),  # None: every event type
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("disabled_reason", sa.String(255), nullable=True),
    sa.Column("secrets", JSONType, nullable=False),
    sa.Column("failing_since", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

#: one row per event sent out; its id is the ``webhook-id`` header, stable across retries
webhook_messages = sa.Table(
    "convergent_webhook_messages",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("event_type", sa.String(255), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
)

#: one row per (message, endpoint) to send: pending until succeeded or failed
webhook_deliveries = sa.Table(
    "convergent_webhook_deliveries",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column(
        "message_id",
        sa.Uuid(),
        sa.ForeignKey("convergent_webhook_messages.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "endpoint_id",
        sa.Uuid(),
        sa.ForeignKey("convergent_webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("status", sa.String(16), nullable=False),  # pending | succeeded | failed
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_convergent_webhook_deliveries_status_due", "status", "next_attempt_at"),
    sa.Index("ix_convergent_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
)

#: every attempt to send a delivery, kept for operators (a bounded response snippet)
webhook_attempts = sa.Table(
    "convergent_webhook_attempts",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column(
        "delivery_id",
        sa.Uuid(),
        sa.ForeignKey("convergent_webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("endpoint_id", sa.Uuid(), nullable=False),
    sa.Column("message_id", sa.Uuid(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("response_snippet", sa.Text(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Index("ix_convergent_webhook_attempts_endpoint", "endpoint_id", "started_at"),
)

#: operational events (delivery exhausted, endpoint disabled) other code can observe
webhook_events = sa.Table(
    "convergent_webhook_events",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("endpoint_id", sa.Uuid(), nullable=True),
    sa.Column("delivery_id", sa.Uuid(), nullable=True),
    sa.Column("detail", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, index=True),
)
