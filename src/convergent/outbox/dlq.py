"""Dead letters from every source, and a registry of how each source retries one.

An engine registers its retry action once (``register_retry("workflow", fn)``; `convergent.dlq`
registers the workflow and webhook ones, and is what operators use); the CLI
(``convergent dlq retry``) looks it up by the row's ``source``. The action runs in the same
transaction that marks the row ``retried``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import ConfigurationError, NotFound
from convergent.messages import Message
from convergent.outbox.emit import insert_messages
from convergent.store import Store, store_of
from convergent.store.schema import dead_letters, parked

__all__ = [
    "DISCARD_ACTIONS",
    "RETRY_ACTIONS",
    "discard",
    "get_dead_letter",
    "list_dead_letters",
    "register_discard",
    "register_retry",
    "resolve",
    "retry",
]

RetryAction = Callable[[AsyncConnection, Any], Awaitable[None]]

#: source -> what "retry" means for a dead letter of that source
RETRY_ACTIONS: dict[str, RetryAction] = {}


#: source -> what else "discard" does (consumer letters: let the key's parked messages go)
DISCARD_ACTIONS: dict[str, RetryAction] = {}


def register_retry(source: str, action: RetryAction) -> None:
    """Declare how dead letters of ``source`` are retried (called with the locked row)."""
    RETRY_ACTIONS[source] = action


def register_discard(source: str, action: RetryAction) -> None:
    """Declare what discarding a dead letter of ``source`` does besides marking it."""
    DISCARD_ACTIONS[source] = action


async def list_dead_letters(
    conn: AsyncConnection, *, source: str | None = None, status: str = "dead", limit: int = 100
) -> list[Any]:
    stmt = sa.select(dead_letters).order_by(dead_letters.c.created_at).limit(limit)
    if status != "all":
        stmt = stmt.where(dead_letters.c.status == status)
    if source:
        stmt = stmt.where(dead_letters.c.source == source)
    return list((await conn.execute(stmt)).all())


async def get_dead_letter(conn: AsyncConnection, dead_letter_id: str, *, lock: bool = False) -> Any:
    try:
        key = uuid.UUID(dead_letter_id)
    except ValueError:
        raise NotFound(f"{dead_letter_id!r} is not a dead letter id (a UUID)") from None
    stmt = sa.select(dead_letters).where(dead_letters.c.id == key)
    row = (await conn.execute(store_of(conn).sql.lock_row(stmt) if lock else stmt)).first()
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    return row


async def retry(store: Store, dead_letter_id: str) -> Any:
    """Run the source's retry action and mark the row ``retried``, in one transaction."""
    async with store.begin() as conn:
        row = await get_dead_letter(conn, dead_letter_id, lock=True)
        if row.status != "dead":
            raise ConfigurationError(f"dead letter {dead_letter_id} is already {row.status}")
        action = RETRY_ACTIONS.get(row.source)
        if action is None:
            raise ConfigurationError(
                f"no retry action for source {row.source!r}; its engine must call register_retry()"
            )
        await action(conn, row)
        await resolve(conn, row.id, "retried")
    return row


async def discard(store: Store, dead_letter_id: str) -> Any:
    async with store.begin() as conn:
        row = await get_dead_letter(conn, dead_letter_id, lock=True)
        action = DISCARD_ACTIONS.get(row.source)
        if action is not None and row.status == "dead":
            await action(conn, row)
        await resolve(conn, row.id, "discarded")
    return row


async def resolve(conn: AsyncConnection, row_id: uuid.UUID, status: str) -> None:
    """Mark a dead letter ``retried`` or ``discarded``, now."""
    await conn.execute(
        sa.update(dead_letters)
        .where(dead_letters.c.id == row_id)
        .values(status=status, resolved_at=store_of(conn).clock.now())
    )


async def _republish(conn: AsyncConnection, row: Any) -> None:
    """Outbox and consumer dead letters: put the same message (same id) back in the outbox.

    Consumer groups that already handled it skip it by its inbox row, so only the group that
    failed takes effect.
    """
    p = row.payload
    await insert_messages(conn, [Message.from_envelope(p["topic"], p["key"], p["envelope"])])


async def _retry_consumer_letter(conn: AsyncConnection, row: Any) -> None:
    """A parked letter is handled again by its group, ahead of the messages parked behind it;
    without a park (``on_dead_letter="skip"``) it is published again."""
    result = await conn.execute(
        sa.update(parked)
        .where(parked.c.dead_letter_id == row.id)
        .values(dead_letter_id=None, attempts=0, next_attempt_at=None)
    )
    if not result.rowcount:
        if "envelope" not in (row.payload or {}):
            raise ConfigurationError(
                f"dead letter {row.id} is a message that could not be read ({row.reason}): "
                "there is nothing to retry; fix the producer and discard it"
            )
        await _republish(conn, row)


async def _discard_consumer_letter(conn: AsyncConnection, row: Any) -> None:
    """The letter's key goes on with the messages parked behind it."""
    await conn.execute(sa.delete(parked).where(parked.c.dead_letter_id == row.id))


register_retry("outbox", _republish)
register_retry("consumer", _retry_consumer_letter)
register_discard("consumer", _discard_consumer_letter)
