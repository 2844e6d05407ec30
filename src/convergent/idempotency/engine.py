"""Idempotency keys in the database: a lock while the first request runs, then its response.

``acquire`` either hands out a ``Lease`` (this request runs the handler), returns the
``StoredResponse`` to replay, or raises ``IdempotencyKeyMismatch`` / ``IdempotencyKeyInProgress``.
``complete`` stores the response inside the handler's own transaction, so the effect and its
answer commit together. A lock is a short lease (``lock_timeout``) that ``renew`` extends while
the request runs, so the key of a request whose process died is free again within seconds. The
lease's ``token`` (when it was taken) guards against a request whose lock expired and was taken
over: its ``renew`` and ``complete`` fail, and its transaction rolls back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import settings, tracing
from convergent.errors import IdempotencyKeyInProgress, IdempotencyKeyMismatch
from convergent.store import Store, direct
from convergent.store.schema import idempotency_keys as t

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_RETENTION",
    "IdempotencyKeys",
    "Lease",
    "StoredResponse",
    "purge_expired_keys",
]

# seconds a crashed request may hold its key; seconds a stored response is replayed
DEFAULT_LOCK_TIMEOUT: float = settings.Settings.model_fields["idempotency_lock_timeout"].default
DEFAULT_RETENTION: float = settings.Settings.model_fields["idempotency_retention"].default
IN_PROGRESS = "in_progress"
COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Lease:
    """This request owns the key while the row still carries ``token`` (when it was locked)."""

    scope: str
    key: str
    token: datetime


class IdempotencyKeys:
    """The idempotency-key table, for one ``Store``.

    ``lock_timeout`` and ``retention`` default to ``CONVERGENT_IDEMPOTENCY_LOCK_TIMEOUT`` and
    ``CONVERGENT_IDEMPOTENCY_RETENTION`` (seconds), else 5 s and 24 h; a running request
    renews its lock every ``renew_every`` (a third of the timeout).
    """

    def __init__(
        self,
        store: Store,
        *,
        lock_timeout: float | None = None,
        retention: float | None = None,
    ) -> None:
        self.store = store
        config = settings.load(
            idempotency_lock_timeout=lock_timeout, idempotency_retention=retention
        )
        self.lock_timeout = timedelta(seconds=config.idempotency_lock_timeout)
        self.retention = timedelta(seconds=config.idempotency_retention)
        self.renew_every = config.idempotency_lock_timeout / 3

    @property
    def claims_on_transaction(self) -> bool:
        """Can ``acquire`` lock the key on the connection of the transaction that will run the
        request, before that transaction begins (saving a connection of its own)?"""
        return self.store.sql.idempotency_keys is not None

    async def acquire(
        self, scope: str, key: str, fingerprint: str, *, conn: AsyncConnection | None = None
    ) -> Lease | StoredResponse:
        """Lock the key for this request, or say why not (replay, 409, 422).

        ``conn``: where `claims_on_transaction`, a ``Store.begin()`` connection that has sent
        nothing yet; the lock goes on it and commits at once (its transaction begins later)."""
        if not tracing.enabled():
            if self.store.sql.idempotency_keys is not None:  # the common case, one frame less
                return await self._acquire_through_driver(scope, key, fingerprint, conn)
            return await self._acquire(scope, key, fingerprint, conn)
        with tracing.tracer.start_as_current_span(
            "idempotency lock", attributes={"convergent.idempotency_key": key}
        ) as span:
            found = await self._acquire(scope, key, fingerprint, conn)
            outcome = "replay" if isinstance(found, StoredResponse) else "new"
            span.set_attribute("convergent.idempotency.outcome", outcome)
            return found

    async def _acquire(
        self, scope: str, key: str, fingerprint: str, conn: AsyncConnection | None
    ) -> Lease | StoredResponse:
        if self.store.sql.idempotency_keys is not None:
            return await self._acquire_through_driver(scope, key, fingerprint, conn)
        if self.store.writer_busy():
            # a lock-free read first: replays and 409s never queue behind the one writer
            async with self.store.read() as conn:
                row = await _select(conn, scope, key)
            if row is not None:
                found = self._decide(row, fingerprint)
                if found is not None:
                    return found
        async with self.store.statement(write=True) as conn:
            for _ in range(5):
                lease = await self._insert(conn, scope, key, fingerprint)
                if lease is not None:
                    return lease
                row = await _select(conn, scope, key)
                if row is None:
                    continue  # purged between the two statements
                found = self._decide(row, fingerprint)
                if found is not None:
                    return found
                lease = await self._take_over(conn, scope, key, fingerprint)
                if lease is not None:
                    return lease
        raise IdempotencyKeyInProgress("the key is contended; try again", retry_after=1.0)

    async def _acquire_through_driver(
        self, scope: str, key: str, fingerprint: str, conn: AsyncConnection | None
    ) -> Lease | StoredResponse:
        """One statement claims the key or reads the row that holds it (a replay, a 409)."""
        driver = self.store.sql.idempotency_keys
        assert driver is not None
        for _ in range(5):
            now = self.store.clock.now()
            claimed, row = await driver.claim(
                self.store,
                scope,
                key,
                fingerprint,
                now=now,
                locked_until=now + self.lock_timeout,
                expires_at=now + max(self.retention, self.lock_timeout),
                conn=conn,
            )
            if claimed:
                return Lease(scope, key, now)
            if row is None:
                continue  # purged (or not yet committed) between our insert and our read
            found = self._decide(row, fingerprint)
            if found is not None:
                return found
            async with self.store.statement(write=True) as conn:
                lease = await self._take_over(conn, scope, key, fingerprint)
            if lease is not None:
                return lease
        raise IdempotencyKeyInProgress("the key is contended; try again", retry_after=1.0)

    async def complete(self, conn: AsyncConnection, lease: Lease, response: StoredResponse) -> None:
        """Store the response in the handler's transaction; raise if the lease was lost."""
        now = self.store.clock.now()
        driver = self.store.sql.idempotency_keys
        if driver is not None:
            done = await driver.complete(
                conn,
                lease.scope,
                lease.key,
                lease.token,
                status=response.status,
                headers=response.headers,
                body=response.body,
                now=now,
                expires_at=now + self.retention,
            )
            if done is not None:
                if not done:
                    raise _lost()
                return
        result = await direct.execute(
            conn,
            _COMPLETE,
            {
                **_lease_params(lease),
                "v_status": response.status,
                "v_headers": [list(h) for h in response.headers],
                "v_body": response.body,
                "v_now": now,
                "v_expires": now + self.retention,
            },
        )
        if result.rowcount != 1:
            raise _lost()

    async def renew(self, lease: Lease) -> bool:
        """Extend a running request's lock; False once it was lost (taken over or done)."""
        now = self.store.clock.now()
        async with self.store.statement(write=True) as conn:
            result = await direct.execute(
                conn, _RENEW, {**_lease_params(lease), "v_until": now + self.lock_timeout}
            )
        return bool(result.rowcount == 1)

    async def release(self, lease: Lease) -> None:
        """Forget an in-progress key so a retry runs again (after a 5xx or an error)."""
        async with self.store.statement(write=True) as conn:
            await direct.execute(conn, _RELEASE, _lease_params(lease))

    def _decide(self, row: Any, fingerprint: str) -> StoredResponse | None:
        """The answer an existing row gives, or None when the key is free to take over."""
        now = self.store.clock.now()
        lock_expired = row.status == COMPLETED or row.locked_until <= now
        if row.expires_at <= now and lock_expired:
            return None  # past retention, not yet purged: as good as absent
        if row.fingerprint != fingerprint:
            raise IdempotencyKeyMismatch(
                "this key was already used for a different request; use a new key"
            )
        if row.status == COMPLETED:
            return StoredResponse(
                row.response_status,
                [(str(n), str(v)) for n, v in row.response_headers or []],
                bytes(row.response_body or b""),
            )
        if not lock_expired:
            remaining = (row.locked_until - now).total_seconds()
            raise IdempotencyKeyInProgress(
                "a request with this key is still running", retry_after=min(max(remaining, 1), 5)
            )
        return None  # its process died holding the lock

    async def _insert(
        self, conn: AsyncConnection, scope: str, key: str, fingerprint: str
    ) -> Lease | None:
        now = self.store.clock.now()
        values = {
            "scope": scope,
            "key": key,
            "fingerprint": fingerprint,
            "status": IN_PROGRESS,
            "locked_until": now + self.lock_timeout,
            "created_at": now,
            "expires_at": now + max(self.retention, self.lock_timeout),
        }
        # its commit need not wait for the disk: the handler's durable commit flushes it later
        stmt = self.store.sql.insert_async_commit(t, values)
        inserted = (await conn.execute(stmt.on_conflict_do_nothing().returning(t.c.key))).first()
        return Lease(scope, key, now) if inserted is not None else None

    async def _take_over(
        self, conn: AsyncConnection, scope: str, key: str, fingerprint: str
    ) -> Lease | None:
        """Claim a key whose lock or retention expired; one contender wins.

        Its ``created_at`` (the new token) is later than the old one's: the old lock expired."""
        now = self.store.clock.now()
        result = await conn.execute(
            t.update()
            .where(
                t.c.scope == scope,
                t.c.key == key,
                sa.or_(
                    sa.and_(t.c.status == IN_PROGRESS, t.c.locked_until <= now),
                    sa.and_(t.c.status == COMPLETED, t.c.expires_at <= now),
                ),
            )
            .values(
                fingerprint=fingerprint,
                status=IN_PROGRESS,
                locked_until=now + self.lock_timeout,
                response_status=None,
                response_headers=None,
                response_body=None,
                created_at=now,
                completed_at=None,
                expires_at=now + max(self.retention, self.lock_timeout),
            )
        )
        return Lease(scope, key, now) if result.rowcount == 1 else None


def _lost() -> IdempotencyKeyInProgress:
    return IdempotencyKeyInProgress(
        "this request held the key too long and another took it over", retry_after=1.0
    )


def _lease_params(lease: Lease) -> dict[str, Any]:
    return {"l_scope": lease.scope, "l_key": lease.key, "l_token": lease.token}


# the statements of every new key, built once (building one costs more than SQLite running it)
_OWNED = sa.and_(
    t.c.scope == sa.bindparam("l_scope"),
    t.c.key == sa.bindparam("l_key"),
    t.c.status == IN_PROGRESS,
    t.c.created_at == sa.bindparam("l_token", type_=t.c.created_at.type),
)
_COMPLETE = (
    t.update()
    .where(_OWNED)
    .values(
        status=COMPLETED,
        locked_until=None,
        response_status=sa.bindparam("v_status"),
        response_headers=sa.bindparam("v_headers", type_=t.c.response_headers.type),
        response_body=sa.bindparam("v_body", type_=t.c.response_body.type),
        completed_at=sa.bindparam("v_now", type_=t.c.completed_at.type),
        expires_at=sa.bindparam("v_expires", type_=t.c.expires_at.type),
    )
)
_RENEW = (
    t.update()
    .where(_OWNED)
    .values(locked_until=sa.bindparam("v_until", type_=t.c.locked_until.type))
)
_RELEASE = t.delete().where(_OWNED)
_SELECT = t.select().where(t.c.scope == sa.bindparam("b_scope"), t.c.key == sa.bindparam("b_key"))


async def _select(conn: AsyncConnection, scope: str, key: str) -> Any:
    return (await direct.execute(conn, _SELECT, {"b_scope": scope, "b_key": key})).first()


async def purge_expired_keys(store: Store) -> int:
    """Delete answers past their retention and locks past their timeout; return how many went.

    A lock that expired belongs to a request that died (its transaction rolled back, so the
    key holds no answer): deleting it frees the key exactly as a retry's takeover would, and
    leaves nothing stuck when no retry comes. A live lock is never touched.
    """
    now = store.clock.now()
    async with store.begin() as conn:
        result = await conn.execute(
            t.delete().where(
                sa.or_(
                    sa.and_(t.c.status == COMPLETED, t.c.expires_at <= now),
                    sa.and_(t.c.status == IN_PROGRESS, t.c.locked_until <= now),
                )
            )
        )
    return int(result.rowcount)
