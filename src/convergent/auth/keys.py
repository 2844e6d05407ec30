"""API keys: issued once, stored as a keyed hash, verified cheaply on every request.

A key reads ``cvk_<prefix>_<secret>``. The prefix is public and finds the row; the secret is 256
random bits, of which only ``HMAC-SHA256(pepper, secret)`` is stored. With that much randomness a
fast hash cannot be guessed backwards; the pepper (``CONVERGENT_API_KEY_PEPPER``, kept outside
the database) means a copy of the table alone cannot even check a guess. Changing the pepper
invalidates every key issued before.

`verify_key` remembers what it found for ``CONVERGENT_API_KEY_CACHE_SECONDS`` (default 5), so a
revoked key stops working everywhere within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import settings
from convergent.errors import AlreadyExists, ConfigurationError, NotFound
from convergent.ids import uuid7
from convergent.store import Store, store_of
from convergent.store.schema import api_keys

__all__ = [
    "ApiKey",
    "Principal",
    "create_key",
    "forget_cached",
    "list_keys",
    "revoke_key",
    "verify_key",
]

_SCHEME = "hmac-sha256"
_LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is a hint, not a write per request


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's id and name (never the key itself) and whether it is admin."""

    id: uuid.UUID
    name: str
    admin: bool


@dataclass(frozen=True)
class ApiKey:
    """A key as operators see it: no secret, no hash."""

    id: uuid.UUID
    name: str
    prefix: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    def to_dict(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": str(self.id),
            "name": self.name,
            "prefix": self.prefix,
            "admin": self.admin,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
        }


def _hash(secret: str) -> str:
    pepper = settings.load().api_key_pepper.get_secret_value().encode()
    return f"{_SCHEME}${hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()}"


def _parse(raw: str) -> tuple[str, str] | None:
    parts = raw.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != "cvk" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _check_name(name: str) -> str:
    if not name or len(name) > 255 or not name.isprintable() or name != name.strip():
        raise ConfigurationError(
            f"{name!r} is not a key name: use 1 to 255 printable characters, e.g. ops-alice"
        )
    return name


async def create_key(
    conn: AsyncConnection, name: str, *, admin: bool = False
) -> tuple[ApiKey, str]:
    """Issue a key named ``name``; returns it with the secret key, which is never shown again."""
    _check_name(name)
    now = store_of(conn).clock.now()
    prefix, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = {
        "id": uuid7(),
        "name": name,
        "prefix": prefix,
        "secret_hash": _hash(secret),
        "admin": admin,
        "created_at": now,
    }
    try:
        async with conn.begin_nested():
            await conn.execute(api_keys.insert().values(**row))
    except IntegrityError:
        raise AlreadyExists(
            f"a key named {name!r} exists (revoked keys keep their name): choose another name"
        ) from None
    return _key(await _by_name(conn, name)), f"cvk_{prefix}_{secret}"


async def revoke_key(conn: AsyncConnection, name: str) -> ApiKey:
    """Revoke the key named ``name`` (again is fine); it stops working within the cache time."""
    now = store_of(conn).clock.now()
    await conn.execute(
        api_keys.update()
        .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return _key(await _by_name(conn, name))


async def list_keys(conn: AsyncConnection, *, include_revoked: bool = True) -> list[ApiKey]:
    stmt = api_keys.select().order_by(api_keys.c.created_at, api_keys.c.name)
    if not include_revoked:
        stmt = stmt.where(api_keys.c.revoked_at.is_(None))
    return [_key(row) for row in await conn.execute(stmt)]


async def _by_name(conn: AsyncConnection, name: str) -> sa.Row[tuple[object, ...]]:
    row = (await conn.execute(api_keys.select().where(api_keys.c.name == name))).first()
    if row is None:
        raise NotFound(f"no API key named {name!r}: list them with `convergent keys list`")
    return row


def _key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        name=m["name"],
        prefix=m["prefix"],
        admin=m["admin"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        last_used_at=m["last_used_at"],
    )


class _Cache:
    """Answers per key digest for a few seconds: one indexed read per key and TTL, not per call."""

    def __init__(self) -> None:
        self.found: dict[bytes, tuple[float, Principal | None]] = {}

    def get(self, digest: bytes) -> tuple[bool, Principal | None]:
        hit = self.found.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, digest: bytes, principal: Principal | None, ttl: float) -> None:
        if len(self.found) > 10_000:  # guessed keys must not grow memory without bound
            self.found.clear()
        self.found[digest] = (time.monotonic() + ttl, principal)


_caches: weakref.WeakKeyDictionary[Store, _Cache] = weakref.WeakKeyDictionary()


async def verify_key(store: Store, raw: str | None) -> Principal | None:
    """The principal a presented key stands for, or None (unknown, malformed or revoked)."""
    parsed = _parse(raw) if raw else None
    if raw is None or parsed is None:
        return None
    cache = _caches.setdefault(store, _Cache())
    digest = hashlib.sha256(raw.encode()).digest()
    hit, principal = cache.get(digest)
    if hit:
        return principal
    prefix, secret = parsed
    now = store.clock.now()
    async with store.read() as conn:
        row = (await conn.execute(api_keys.select().where(api_keys.c.prefix == prefix))).first()
    principal = None
    if (
        row is not None
        and row.revoked_at is None
        and hmac.compare_digest(row.secret_hash, _hash(secret))
    ):
        principal = Principal(row.id, row.name, row.admin)
        if row.last_used_at is None or now - row.last_used_at > _LAST_USED_EVERY:
            async with store.statement(write=True) as conn:
                await conn.execute(
                    api_keys.update().where(api_keys.c.id == row.id).values(last_used_at=now)
                )
    cache.put(digest, principal, settings.load().api_key_cache_seconds)
    return principal


def forget_cached(store: Store) -> None:
    """Drop this process's cached answers (tests, or right after a revoke in this process)."""
    _caches.pop(store, None)
