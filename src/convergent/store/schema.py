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
    "leases",
    "log_entries",
    "log_heads",
    "log_offsets",
    "metadata",
    "outbox",
    "replies",
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

#: events written in the caller's transaction, waiting for the relay to publish them
outbox = sa.Table(
    "convergent_outbox",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),  # UUIDv7: per-key publish order
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("partition", sa.Integer(), nullable=False),  # relay partition: hash(key) % N
    sa.Column("envelope", JSONType, nullable=False),  # CloudEvents attributes, data, headers
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True, index=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Index("ix_convergent_outbox_partition_id", "partition", "id"),
    sa.Index("ix_convergent_outbox_topic_key_id", "topic", "key", "id"),
)

#: named leases (relay partitions, embedded consumer partitions, group membership)
leases = sa.Table(
    "convergent_leases",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=True),
    sa.Column("token", sa.String(64), nullable=True),  # changes on every takeover
    sa.Column("lease_until", UTCDateTime(), nullable=True),
)

#: the embedded broker's log: positions are dense per (topic, partition), assigned at append
log_entries = sa.Table(
    "convergent_log",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("position", sa.BigInteger(), primary_key=True),
    sa.Column("message_id", sa.String(64), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("envelope", JSONType, nullable=False),
    sa.Column("appended_at", UTCDateTime(), nullable=False, index=True),
)

#: the next position per (topic, partition); its row lock makes one appender at a time
log_heads = sa.Table(
    "convergent_log_heads",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("next_position", sa.BigInteger(), nullable=False),
)

#: committed offsets per consumer group, plus the retry state of the message at the offset
log_offsets = sa.Table(
    "convergent_log_offsets",
    metadata,
    sa.Column("consumer_group", sa.String(255), primary_key=True),
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer(), primary_key=True),
    sa.Column("position", sa.BigInteger(), nullable=False),  # next position to handle
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
)

#: replies to requests, kept until read: a requester that restarts still finds its answer
replies = sa.Table(
    "convergent_replies",
    metadata,
    sa.Column("correlation_id", sa.String(64), primary_key=True),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("envelope", JSONType, nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False, index=True),
)

# workflows (migration 0004) ------------------------------------------------------------------

# webhooks (migration 0005) -------------------------------------------------------------------
