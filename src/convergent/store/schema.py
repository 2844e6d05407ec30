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
    "api_keys",
    "dead_letters",
    "idempotency_keys",
    "inbox",
    "include_object",
    "leases",
    "log_entries",
    "log_heads",
    "log_offsets",
    "metadata",
    "operator_actions",
    "outbox",
    "parked",
    "queues",
    "replies",
    "resource_history",
    "run_children",
    "run_events",
    "run_steps",
    "runs",
    "schedule_ticks",
    "schedules",
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
    # keys in flight, for the console: a partial index holds only the few rows in progress
    sa.Index(
        "ix_convergent_idempotency_keys_in_progress",
        "created_at",
        postgresql_where=sa.text("status = 'in_progress'"),
        sqlite_where=sa.text("status = 'in_progress'"),
    ),
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

#: one row per state transition or versioned update of a resource, written in the same transaction
resource_history = sa.Table(
    "convergent_resource_history",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("resource_type", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(255), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("from_state", sa.String(64), nullable=True),  # None for the creation
    sa.Column("to_state", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=True),
    sa.Column("cause", sa.String(255), nullable=True),
    sa.Column("meta", JSONType, nullable=True),
    sa.Index(
        "ix_convergent_resource_history_resource",
        "resource_type",
        "resource_id",
        "version",
    ),
)

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

#: one row per workflow run; ``next_at`` says when it is due, the lease says who holds it
runs = sa.Table(
    "convergent_runs",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("workflow", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),  # the run's idempotency key
    sa.Column("queue", sa.String(64), nullable=False, server_default="default"),
    # the workflow's code version when the run started; only workers serving it claim the run
    sa.Column("version", sa.String(64), nullable=False, server_default="1"),
    # pending | running | compensating | completed | failed | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("args", JSONType, nullable=False),
    sa.Column("result", JSONType, nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),  # claims so far
    sa.Column("next_at", UTCDateTime(), nullable=True),  # None once final
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    # why a due run is not taken (no worker serves its version); None once a worker claims it
    sa.Column("waiting_for", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("workflow", "key"),
    sa.Index("ix_convergent_runs_queue_next_at", "queue", "next_at"),
    sa.Index("ix_convergent_runs_lease_until", "lease_until"),
    # the console: runs in a state, newest first (ids are UUIDv7), and a run by its key
    sa.Index("ix_convergent_runs_status_id", "status", "id"),
    sa.Index("ix_convergent_runs_key", "key"),
    # fleet queues (migration 0010): higher runs first within a queue that declares limits
    sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
)

#: the checkpoints of a run, by position: steps, timers, waits and compensations
run_steps = sa.Table(
    "convergent_run_steps",
    metadata,
    sa.Column("run_id", sa.Uuid(), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # step | sleep | wait
    sa.Column("name", sa.String(255), nullable=False),
    # started | retrying | completed | failed | waiting
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("result", JSONType, nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # when the step's first attempt began: its retry policy's time limit counts from it
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
)

#: events sent to runs (callbacks, partial fills); the dedupe key drops a second copy
run_events = sa.Table(
    "convergent_run_events",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("run_id", sa.Uuid(), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("dedupe_key", sa.String(255), nullable=False),
    sa.Column("payload", JSONType, nullable=True),
    sa.Column("consumed_seq", sa.Integer(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("run_id", "name", "dedupe_key"),
)

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


# operators: API keys and the actions taken with them (migration 0006) -----------------------

#: API keys: looked up by their public ``prefix``; only a keyed hash of the secret is stored
api_keys = sa.Table(
    "convergent_api_keys",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(128), nullable=False),
    sa.Column("admin", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
)

#: every operator action (cancel, retry, discard, resend...): who, when, what, and how it ended
operator_actions = sa.Table(
    "convergent_operator_actions",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),  # the key's name, never the key
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target_kind", sa.String(32), nullable=False),
    sa.Column("target_id", sa.String(255), nullable=False),
    sa.Column("params", JSONType, nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # started | ok | failed
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Index("ix_convergent_operator_actions_target", "target_kind", "target_id", "at"),
)

# parked messages (migration 0007) ------------------------------------------------------------

#: a consumer group's messages of a key held behind a dead letter of that key, in arrival order
#: (the head row is the letter's own message while ``dead_letter_id`` is set)
parked = sa.Table(
    "convergent_parked",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True
    ),  # arrival order
    sa.Column("consumer_group", sa.String(255), nullable=False),
    sa.Column("topic", sa.String(255), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("message_id", sa.String(255), nullable=False),
    sa.Column("envelope", JSONType, nullable=False),
    sa.Column("dead_letter_id", sa.Uuid(), nullable=True, index=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("parked_at", UTCDateTime(), nullable=False),
    sa.Index("ix_convergent_parked_group_topic_key", "consumer_group", "topic", "key", "id"),
)

# schedules, child runs, fleet queues (migration 0010) ------------------------------------------

#: a workflow started on a cron expression or fixed interval; ``next_at`` is the next tick due
schedules = sa.Table(
    "convergent_schedules",
    metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("workflow", sa.String(255), nullable=False),
    sa.Column("cron", sa.String(255), nullable=True),
    sa.Column("every_seconds", sa.Float(), nullable=True),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("catch_up", sa.String(16), nullable=False),  # skip | latest | all
    sa.Column("args", JSONType, nullable=True),
    sa.Column("queue", sa.String(64), nullable=True),
    sa.Column("spec", sa.String(1024), nullable=False),  # the definition; a change re-plans
    sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("next_at", UTCDateTime(), nullable=True),
    sa.Column("triggered_at", UTCDateTime(), nullable=True),  # a manual run asked for
    sa.Column("last_tick_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_convergent_schedules_next_at", "next_at"),
)

#: one row per tick fired: the primary key makes a tick start its run once across all workers
schedule_ticks = sa.Table(
    "convergent_schedule_ticks",
    metadata,
    sa.Column("schedule", sa.String(255), primary_key=True),
    sa.Column("tick_at", UTCDateTime(), primary_key=True),
    sa.Column("run_id", sa.Uuid(), nullable=False),
    sa.Column("manual", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

#: a run started by another with ``ctx.child``: the parent waits on rows still ``waiting``
run_children = sa.Table(
    "convergent_run_children",
    metadata,
    sa.Column("parent_id", sa.Uuid(), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True),
    sa.Column("child_id", sa.Uuid(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # waiting|done|cancelled|orphaned
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Index("ix_convergent_run_children_status", "status"),
    sa.Index("ix_convergent_run_children_child_id", "child_id"),
)

#: limits shared by every worker of a named queue; ``tokens`` is its rate-limit bucket
queues = sa.Table(
    "convergent_queues",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("concurrency", sa.Integer(), nullable=True),
    sa.Column("rate_limit", sa.Integer(), nullable=True),
    sa.Column("rate_period", sa.Float(), nullable=True),
    sa.Column("tokens", sa.Float(), nullable=False, server_default="0"),
    sa.Column("refilled_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
