"""Writing: outbox rows inserted in the caller's transaction, published only after it commits."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate, trace
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import tracing
from convergent.faults import fault_point, register
from convergent.ids import uuid7
from convergent.messages import Message
from convergent.store import direct, store_of
from convergent.store.notify import NotifyingWrite
from convergent.store.schema import outbox
from convergent.topics import Topic, get_topic, partition_for

__all__ = ["OUTBOX_CHANNEL", "RELAY_PARTITIONS", "emit", "insert_messages"]

OUTBOX_CHANNEL = "convergent_outbox"
#: relay partitions: each has one relay holding it at a time, so order per key holds
RELAY_PARTITIONS = 16

AFTER_INSERT = register(
    "outbox.after_insert_before_commit",
    "outbox rows inserted, caller's transaction not committed: nothing may be published",
)


async def emit(
    conn: AsyncConnection,
    topic: Topic | str,
    key: str,
    type: str,
    data: Any,
    *,
    headers: dict[str, str] | None = None,
    source: str = "convergent",
) -> Message:
    """Validate ``data`` against the topic's schema and add it to the outbox in ``conn``'s
    transaction (its time from the store's clock). Returns the message (its ``id`` is the
    CloudEvents id)."""
    spec = get_topic(topic)
    extra = dict(headers or {})
    if not trace.get_current_span().is_recording():  # no trace to continue: nothing to add
        propagate.inject(extra)
        return await _emit(conn, spec, key, type, data, source, extra)
    with tracing.tracer.start_as_current_span(
        f"create {spec.name}",
        kind=tracing.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "convergent",
            "messaging.operation.type": "create",
            "messaging.destination.name": spec.name,
            "messaging.message.conversation_id": key,
            "cloudevents.event_type": type,
        },
    ) as span:
        propagate.inject(extra)  # W3C traceparent: the relay and the consumers continue it
        message = await _emit(conn, spec, key, type, data, source, extra)
        span.set_attribute("messaging.message.id", message.id)
        return message


async def _emit(
    conn: AsyncConnection,
    spec: Topic,
    key: str,
    type: str,
    data: Any,
    source: str,
    headers: dict[str, str],
) -> Message:
    message = Message(
        topic=spec.name,
        key=key,
        type=type,
        data=spec.validate(data),
        source=source,
        id=str(uuid7()),
        time=store_of(conn).clock.now(),
        headers=headers,
    )
    await insert_messages(conn, [message])
    return message


# built once: building costs more than SQLite running it
_INSERT = sa.insert(outbox)
_INSERT_ONE = NotifyingWrite(
    outbox, ["id", "topic", "key", "partition", "envelope", "created_at"], OUTBOX_CHANNEL
)


async def insert_messages(conn: AsyncConnection, messages: list[Message]) -> None:
    """Insert already-built messages (used by emit and by DLQ retries)."""
    if not messages:
        return
    rows = [
        {
            "id": uuid7(),
            "topic": m.topic,
            "key": m.key,
            "partition": partition_for(m.key, RELAY_PARTITIONS),
            "envelope": m.to_envelope(),
            "created_at": m.time,
        }
        for m in messages
    ]
    notifier = store_of(conn).notifier
    if len(rows) == 1:  # the row and the relay's wake-up in one statement
        await notifier.write(conn, _INSERT_ONE, rows[0])
    else:
        await direct.execute(conn, _INSERT, rows)
        await notifier.notify(conn, OUTBOX_CHANNEL)
    fault_point(AFTER_INSERT)
