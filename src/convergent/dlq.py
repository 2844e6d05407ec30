"""One dead-letter queue for every source: outbox, consumers, workflows and webhooks.

List, show (reason, attempts, payload), retry and discard, one letter or every letter matching a
filter. Retrying hands the letter back to its source: an outbox or consumer message is
published again (same id), a workflow run resumes from its checkpoints (a dead-lettered
compensation runs again), a webhook message is delivered again (same ``webhook-id``). Each
action is recorded (who, when, what) with the letter, and a workflow letter's also in its run's
history. The CLI (``convergent dlq``), the admin router and the console call these functions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import ConfigurationError, ConvergentError, InvalidTransition
from convergent.outbox import dlq as _registry
from convergent.store import Store
from convergent.store.schema import dead_letters
from convergent.webhooks import resend
from convergent.workflows._operate import record_action, reopen_compensation, resume

__all__ = [
    "SOURCES",
    "Bulk",
    "DeadLetter",
    "LetterFilter",
    "discard",
    "discard_matching",
    "list_letters",
    "retry",
    "retry_matching",
    "show",
]

SOURCES = ("outbox", "consumer", "workflow", "webhook")


@dataclass(frozen=True)
class DeadLetter:
    id: uuid.UUID
    source: str  # outbox | consumer | workflow | webhook
    source_ref: str  # the row in its source: a message, a run (run:position), a delivery
    name: str  # topic, workflow or webhook endpoint
    key: str | None
    reason: str
    attempts: int
    payload: Any
    status: str  # dead | retried | discarded
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, row: Any) -> DeadLetter:
        return cls(
            row.id,
            row.source,
            row.source_ref,
            row.name,
            row.key,
            row.reason,
            row.attempts,
            row.payload,
            row.status,
            row.created_at,
            row.resolved_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "source": self.source,
            "source_ref": self.source_ref,
            "name": self.name,
            "key": self.key,
            "reason": self.reason,
            "attempts": self.attempts,
            "payload": self.payload,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
        }


@dataclass(frozen=True)
class LetterFilter:
    """Which letters: every field given must match (``status`` "all" matches any)."""

    source: str | None = None
    status: str = "dead"
    name: str | None = None
    key: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        d = dead_letters.c
        out = []
        if self.source:
            out.append(d.source == self.source)
        if self.status != "all":
            out.append(d.status == self.status)
        if self.name:
            out.append(d.name == self.name)
        if self.key:
            out.append(d.key == self.key)
        return out


@dataclass
class Bulk:
    """What a bulk action did: the letters it handled, and why the others failed."""

    done: list[uuid.UUID] = field(default_factory=list)
    failed: dict[uuid.UUID, str] = field(default_factory=dict)


async def list_letters(
    store: Store, where: LetterFilter | None = None, *, limit: int = 100
) -> list[DeadLetter]:
    """Matching letters, oldest first."""
    f = where or LetterFilter()
    stmt = sa.select(dead_letters).where(*f.where()).order_by(dead_letters.c.id).limit(limit)
    async with store.read() as conn:
        return [DeadLetter.of(r) for r in (await conn.execute(stmt)).all()]


async def show(store: Store, letter_id: str | uuid.UUID) -> DeadLetter:
    async with store.read() as conn:
        return DeadLetter.of(await _registry.get_dead_letter(conn, str(letter_id)))


async def retry(
    store: Store, letter_id: str | uuid.UUID, *, actor: str | None = "python"
) -> DeadLetter:
    """Hand the letter back to its source and mark it retried, in one transaction; recorded
    as done by ``actor`` (None: the caller records it, as the console does)."""
    async with store.begin() as conn:
        row = await _registry.get_dead_letter(conn, str(letter_id), lock=True)
        _still_dead(row)
        action = _registry.RETRY_ACTIONS.get(row.source)
        if action is None:
            raise ConfigurationError(
                f"no retry action for source {row.source!r}; its engine must call register_retry()"
            )
        await action(conn, row)
        await _resolve(conn, row, "retried", actor)
    return DeadLetter.of(row)


async def discard(
    store: Store, letter_id: str | uuid.UUID, *, actor: str | None = "python"
) -> DeadLetter:
    """Mark the letter handled without retrying it (it is kept, as discarded)."""
    async with store.begin() as conn:
        row = await _registry.get_dead_letter(conn, str(letter_id), lock=True)
        _still_dead(row)
        action = _registry.DISCARD_ACTIONS.get(row.source)
        if action is not None:  # consumer letters: the key's parked messages go on
            await action(conn, row)
        await _resolve(conn, row, "discarded", actor)
    return DeadLetter.of(row)


async def retry_matching(
    store: Store, where: LetterFilter, *, actor: str = "python", limit: int = 1000
) -> Bulk:
    """Retry every dead letter matching ``where``, each in its own transaction."""
    return await _bulk(store, where, limit, lambda i: retry(store, i, actor=actor))


async def discard_matching(
    store: Store, where: LetterFilter, *, actor: str = "python", limit: int = 1000
) -> Bulk:
    return await _bulk(store, where, limit, lambda i: discard(store, i, actor=actor))


async def _bulk(store: Store, where: LetterFilter, limit: int, one: Any) -> Bulk:
    dead = LetterFilter(where.source, "dead", where.name, where.key)
    out = Bulk()
    for letter in await list_letters(store, dead, limit=limit):
        try:
            await one(letter.id)
            out.done.append(letter.id)
        except ConvergentError as exc:
            out.failed[letter.id] = exc.message
    return out


def _still_dead(row: Any) -> None:
    if row.status != "dead":
        raise InvalidTransition(f"dead letter {row.id} is already {row.status}")


async def _resolve(conn: AsyncConnection, row: Any, status: str, actor: str | None) -> None:
    verb = "retry" if status == "retried" else "discard"
    await _registry.resolve(conn, row.id, status)
    if actor is None:
        return
    detail = f"{row.source} {row.name}: {row.reason}"[:2000]
    await record_action(
        conn,
        actor=actor,
        action=f"dead_letter.{verb}",
        target_kind="dead_letter",
        target_id=str(row.id),
        detail=detail,
    )
    if row.source == "workflow":
        run_id, _, _ = row.source_ref.partition(":")
        await record_action(
            conn,
            actor=actor,
            action=f"dead_letter.{verb}",
            target_kind="run",
            target_id=run_id,
            params={"dead_letter": str(row.id)},
            detail=detail,
        )


async def _retry_workflow(conn: AsyncConnection, row: Any) -> None:
    """A run given up on resumes from its checkpoints; a compensation that never succeeded
    (``run:position``) runs again and the run ends as before once it is done."""
    run_ref, _, seq = row.source_ref.partition(":")
    run_id = uuid.UUID(run_ref)
    if seq:
        await reopen_compensation(conn, run_id, int(seq))
    else:
        await resume(conn, run_id)


async def _retry_webhook(conn: AsyncConnection, row: Any) -> None:
    """Deliver the message to the endpoint again, with the same ``webhook-id``."""
    await resend(conn, uuid.UUID(row.key), uuid.UUID(row.name))


_registry.register_retry("workflow", _retry_workflow)
_registry.register_retry("webhook", _retry_webhook)
