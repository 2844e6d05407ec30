"""Idempotency keys on PostgreSQL: the two statements of every new key, sent through asyncpg.

Every protected request claims its key, and every one that runs stores its answer. Through
SQLAlchemy each of those statements costs ~0.3-0.5 ms of CPU (building, cache key, compiled
cache, result wrapping) on top of a ~0.1 ms round trip; sent to the driver they cost little more
than the round trip. On the handler's connection the claim goes with its transaction's BEGIN in
one message (`direct.begin_with`); elsewhere it is one statement that also reads the row it lost
to.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import StoreUnavailable
from convergent.store import direct
from convergent.store.schema import idempotency_keys

if TYPE_CHECKING:
    from convergent.store.engine import Store

__all__ = ["DriverKeys", "KeyRow"]

_T = idempotency_keys.name

# The claim's commit need not wait for the disk (set_config(..., true) applies to this
# statement's own transaction): the handler's durable commit comes later in the WAL and flushes
# it too. Its reads see the table as it was before the INSERT: the row it lost to, or nothing.
_CLAIM = f"""
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)),
claimed AS (
    INSERT INTO {_T} (scope, key, fingerprint, status, locked_until, created_at, expires_at)
    SELECT $1::varchar, $2::varchar, $3::varchar, 'in_progress', $4::timestamptz,
           $5::timestamptz, $6::timestamptz
    FROM async_commit
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT FROM claimed) AS claimed, k.status, k.fingerprint, k.locked_until,
       k.expires_at, k.response_status, k.response_headers, k.response_body
FROM (SELECT 1) AS one
LEFT JOIN {_T} AS k ON k.scope = $1::varchar AND k.key = $2::varchar
"""

_COMPLETE = f"""
UPDATE {_T}
SET status = 'completed', locked_until = NULL, response_status = $4::integer,
    response_headers = $5::jsonb, response_body = $6::bytea, completed_at = $7::timestamptz,
    expires_at = $8::timestamptz
WHERE scope = $1::varchar AND key = $2::varchar AND status = 'in_progress'
  AND created_at = $3::timestamptz
"""


class KeyRow(NamedTuple):
    """An existing key, as the claim read it (the columns a decision needs)."""

    status: str
    fingerprint: str
    locked_until: datetime | None
    expires_at: datetime
    response_status: int | None
    response_headers: list[list[str]] | None
    response_body: bytes | None


class DriverKeys:
    """Claim a key and store its answer, each one statement straight through the driver."""

    async def claim(
        self,
        store: Store,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        now: datetime,
        locked_until: datetime,
        expires_at: datetime,
        conn: AsyncConnection | None = None,
    ) -> tuple[bool, KeyRow | None]:
        """Insert the key if absent, committed at once; (True, None) when this call inserted
        it, else (False, the row it found) — (False, None) if that row went in the meantime.

        On ``conn`` if its transaction has not begun on the server yet (SQLAlchemy sends BEGIN
        with the first statement), else on a connection of its own."""
        args = (scope, key, fingerprint, locked_until, now, expires_at)
        record = None
        if conn is not None:
            found = await _claim_on_begin(conn, args)
            if found is not None:
                return found
            driver = await _driver(conn)
            if not driver.is_in_transaction():
                try:
                    record = await driver.fetchrow(_CLAIM, *args)
                except Exception as exc:
                    await _failed(conn, driver, exc)
        if record is None:
            async with store._connection() as own:
                driver = await _driver(own)
                try:
                    record = await driver.fetchrow(_CLAIM, *args)
                except Exception as exc:
                    await _failed(own, driver, exc)
        if record["claimed"]:
            return True, None
        if record["status"] is None:
            return False, None
        row = KeyRow(*tuple(record)[1:])
        if isinstance(row.response_headers, str):  # a connection without SQLAlchemy's codec
            row = row._replace(response_headers=json.loads(row.response_headers))
        return False, row

    async def complete(
        self,
        conn: AsyncConnection,
        scope: str,
        key: str,
        token: datetime,
        *,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
        now: datetime,
        expires_at: datetime,
    ) -> bool | None:
        """Store the answer in ``conn``'s open transaction if the key is still held with
        ``token``; None when ``conn`` has no transaction open yet (nothing was sent: the
        handler wrote nothing, so SQLAlchemy must open it)."""
        driver = await _driver(conn)
        if not driver.is_in_transaction():
            return None
        try:
            done = await driver.execute(
                _COMPLETE, scope, key, token, status, json.dumps(headers), body, now, expires_at
            )
        except Exception as exc:
            await _failed(conn, driver, exc)
        return bool(done == "UPDATE 1")


# the claim as statements of their own, for `_claim_on_begin`
_K = idempotency_keys.c
_CLAIMED = "convergent.claimed"
_CLAIM_INSERT = (
    pg_insert(idempotency_keys)
    .values(
        scope=sa.bindparam("k_scope", type_=_K.scope.type),
        key=sa.bindparam("k_key", type_=_K.key.type),
        fingerprint=sa.bindparam("k_fingerprint", type_=_K.fingerprint.type),
        status="in_progress",
        locked_until=sa.bindparam("k_until", type_=_K.locked_until.type),
        created_at=sa.bindparam("k_now", type_=_K.created_at.type),
        expires_at=sa.bindparam("k_expires", type_=_K.expires_at.type),
    )
    .on_conflict_do_nothing()
    # only a row this statement inserted says so, in a setting of the session read after BEGIN
    # (the lease's token, when it was locked, need not tell two requests apart: a test clock)
    .returning(sa.func.set_config(_CLAIMED, "yes", False).label("claimed"))
)
_WHERE_KEY = sa.and_(
    _K.scope == sa.bindparam("k_scope", type_=_K.scope.type),
    _K.key == sa.bindparam("k_key", type_=_K.key.type),
)
_FORGET = sa.select(sa.func.set_config(_CLAIMED, "", False).label("forgot"))
_OURS = sa.select(sa.literal(1).label("ours")).where(sa.func.current_setting(_CLAIMED) == "yes")
_ROW = sa.select(
    _K.status,
    _K.fingerprint,
    _K.locked_until,
    _K.expires_at,
    _K.response_status,
    _K.response_headers,
    _K.response_body,
).where(_WHERE_KEY)


async def _claim_on_begin(
    conn: AsyncConnection, args: tuple[Any, ...]
) -> tuple[bool, KeyRow | None] | None:
    """The claim, committed on its own, then the BEGIN of ``conn``'s transaction and a check
    that the key is ours, in ONE message; None where that cannot be done (the caller claims
    the usual way). A key already there is then read in the new transaction."""
    scope, key, fingerprint, locked_until, now, expires_at = args
    params = {
        "k_scope": scope,
        "k_key": key,
        "k_fingerprint": fingerprint,
        "k_until": locked_until,
        "k_now": now,
        "k_expires": expires_at,
    }
    claim = direct.literal_sql(conn, _CLAIM_INSERT, params)
    forget = direct.literal_sql(conn, _FORGET, {})
    if claim is None or forget is None:
        return None
    # its commit need not wait for the disk: the handler's durable commit flushes it later
    first = (forget, "SET LOCAL synchronous_commit TO off", claim)
    ours = await direct.begin_with(conn, _OURS, {}, committed_before=first)
    if ours is None:
        return None
    if ours:
        return True, None
    row = (await direct.execute(conn, _ROW, params)).first()
    return False, None if row is None else KeyRow(*row)


async def _driver(conn: AsyncConnection) -> Any:
    """``conn``'s asyncpg connection (at once when it is checked out)."""
    sync = conn.sync_connection
    if sync is not None and not sync.closed and not sync.invalidated:
        return sync.connection.driver_connection
    return (await conn.get_raw_connection()).driver_connection


async def _failed(conn: AsyncConnection, driver: Any, exc: Exception) -> NoReturn:
    """Re-raise a statement's error; a connection lost on the way raises StoreUnavailable (as
    SQLAlchemy's own statements do). A driver timeout passes through: ``Store`` drops the
    stalled connection and answers StoreUnavailable."""
    if isinstance(exc, TimeoutError) or not driver.is_closed():
        raise exc
    await conn.invalidate()
    raise StoreUnavailable(f"database error: {exc}") from exc
