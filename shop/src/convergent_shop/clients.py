"""Who is asking: every shop route (but the exchange's callback and ops) needs an API key.

Keys are the toolkit's (`convergent keys create NAME [--admin]`, docs/security.md). A router's
``dependencies=[AUTHENTICATED]`` checks the key (401 if missing, unknown or revoked) and keeps
the principal on the request. What a client creates belongs to it: rows store the key's id
(never the key), histories its name, and another client is told 404, as if the thing did not
exist. Orders and bookings carry their owner in a column; customers and webhook endpoints,
whose ids are shared with other services, in ``shop_owners``.
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.auth import Principal, require_key
from convergent.errors import NotFound
from convergent_shop.db import metadata
from convergent_shop.keyed import insert_once

__all__ = ["AUTHENTICATED", "actor", "client_id", "owned", "owner_ids", "owners", "take"]

owners = sa.Table(
    "shop_owners",
    metadata,
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("client", sa.String(64), nullable=False, index=True),
)


async def _authenticate(request: Request, principal: Principal = Depends(require_key)) -> None:  # noqa: B008 - FastAPI's idiom
    request.state.principal = principal


AUTHENTICATED = Depends(_authenticate)


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def client_id(request: Request) -> str:
    """The owner recorded for what this request creates: its key's id."""
    return str(principal_of(request).id)


def actor(request: Request) -> str:
    """Who histories show: the key's name."""
    return principal_of(request).name


async def take(conn: AsyncConnection, kind: str, key: str, request: Request) -> None:
    """Make this request's client the owner of (kind, key) unless it has one; 404 if another."""
    await insert_once(conn, owners, {"kind": kind, "id": key, "client": client_id(request)})
    await owned(conn, kind, key, request)


async def owned(conn: AsyncConnection, kind: str, key: str, request: Request) -> None:
    """Raise NotFound unless this request's client owns (kind, key)."""
    query = sa.select(owners.c.client).where(owners.c.kind == kind, owners.c.id == key)
    if (await conn.execute(query)).scalar() != client_id(request):
        raise NotFound(f"no {kind} {key}")


async def owner_ids(conn: AsyncConnection, kind: str, request: Request) -> set[str]:
    """The ids of every ``kind`` this request's client owns."""
    query = sa.select(owners.c.id).where(
        owners.c.kind == kind, owners.c.client == client_id(request)
    )
    return set((await conn.execute(query)).scalars())
