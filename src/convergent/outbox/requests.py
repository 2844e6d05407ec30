"""Request/reply over topics, durably.

The request goes through the outbox (it survives a crash before publish) with ``correlationid``
(= its id) and ``replyto`` headers. The replier answers with ``send_reply`` in its handler's
transaction. On the requester's side a consumer of the reply topic runs ``record_reply``, which
stores the reply; ``await_reply`` finds it there, so a requester that restarted can still collect
the answer by correlation id.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import MessagingError
from convergent.messages import Message
from convergent.outbox.emit import emit
from convergent.store import Store, store_of
from convergent.store.schema import replies
from convergent.topics import Topic

__all__ = [
    "CORRELATION_ID",
    "REPLY_TO",
    "await_reply",
    "purge_replies",
    "record_reply",
    "send_reply",
    "send_request",
]

CORRELATION_ID = "correlationid"  # CloudEvents extension attribute names: lowercase alphanumeric
REPLY_TO = "replyto"
REPLIES_CHANNEL = "convergent_replies"


async def send_request(
    conn: AsyncConnection,
    topic: Topic | str,
    key: str,
    type: str,
    data: Any,
    *,
    reply_to: Topic | str,
    headers: dict[str, str] | None = None,
) -> str:
    """Emit a request in ``conn``'s transaction; returns its correlation id."""
    correlation_id = Message(topic="", key="", type="", data=None).id
    reply_name = reply_to if isinstance(reply_to, str) else reply_to.name
    extra = {**(headers or {}), CORRELATION_ID: correlation_id, REPLY_TO: reply_name}
    await emit(conn, topic, key, type, data, headers=extra)
    return correlation_id


async def send_reply(conn: AsyncConnection, request: Message, type: str, data: Any) -> Message:
    """Answer ``request`` (inside the handler's transaction, so the answer is sent once)."""
    try:
        reply_to, correlation_id = request.headers[REPLY_TO], request.headers[CORRELATION_ID]
    except KeyError:
        raise MessagingError(f"message {request.id} is not a request (no replyto header)") from None
    return await emit(
        conn, reply_to, request.key, type, data, headers={CORRELATION_ID: correlation_id}
    )


async def record_reply(conn: AsyncConnection, message: Message) -> None:
    """Consumer handler for reply topics: keep the reply until ``await_reply`` reads it."""
    correlation_id = message.headers.get(CORRELATION_ID)
    if not correlation_id:
        return  # not a reply: nothing to correlate
    store = store_of(conn)
    await conn.execute(
        store.sql.insert(replies)
        .values(
            correlation_id=correlation_id,
            topic=message.topic,
            key=message.key,
            envelope=message.to_envelope(),
            received_at=message.time,
        )
        .on_conflict_do_nothing()
    )
    await store.notifier.notify(conn, REPLIES_CHANNEL)


async def await_reply(
    store: Store, correlation_id: str, timeout: float, *, poll: float = 0.5
) -> Message:
    """The reply to the request ``correlation_id``; raises TimeoutError after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with store.notifier.subscribe(REPLIES_CHANNEL) as wake:
        while True:
            async with store.read() as conn:
                row = (
                    await conn.execute(
                        sa.select(replies).where(replies.c.correlation_id == correlation_id)
                    )
                ).first()
            if row is not None:
                return Message.from_envelope(row.topic, row.key, row.envelope)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no reply to {correlation_id} within {timeout} s")
            await wake.wait(min(remaining, poll))


async def purge_replies(conn: AsyncConnection, older_than: datetime) -> int:
    result = await conn.execute(sa.delete(replies).where(replies.c.received_at < older_than))
    return int(result.rowcount)
