"""Named leases shared fairly by a group of members (relays, embedded consumers).

A member heartbeats ``<group>/member/<holder>``, counts live members and holds at most
``ceil(partitions / members)`` of the group's partition leases. Every takeover writes a new token;
work done under a lease is committed only while the token is still the member's, so two members
never settle each other's claims.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import metrics
from convergent.store import direct, store_of
from convergent.store.schema import leases

__all__ = ["PartitionLeases", "tokens_still_held"]


class PartitionLeases:
    """The partitions ``holder`` owns in ``group``; call ``refresh`` inside a write transaction."""

    def __init__(self, group: str, partitions: int, holder: str, ttl: float) -> None:
        self.group = group
        self.partitions = partitions
        self.holder = holder
        self.ttl = timedelta(seconds=ttl)
        self.held: dict[int, str] = {}  # partition -> token

    def name(self, partition: int) -> str:
        return f"{self.group}/{partition}"

    async def refresh(self, conn: AsyncConnection, now: datetime) -> dict[int, str]:
        """Heartbeat, renew what is held, take free or expired partitions up to the fair share."""
        until = now + self.ttl
        member = f"{self.group}/member/{self.holder}"
        names = [self.name(p) for p in range(self.partitions)]
        await _ensure(conn, [member, *names])
        await conn.execute(
            sa.update(leases)
            .where(leases.c.name == member)
            .values(holder=self.holder, lease_until=until)
        )
        live = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(leases)
            .where(leases.c.name.like(f"{self.group}/member/%"), leases.c.lease_until > now)
        )
        share = math.ceil(self.partitions / max(1, int(live or 1)))
        rows = (
            await conn.execute(
                store_of(conn).sql.lock_row(
                    sa.select(leases).where(leases.c.name.in_(names)).order_by(leases.c.name)
                )
            )
        ).all()
        mine = {r.name: r for r in rows if r.holder == self.holder and _alive(r.lease_until, now)}
        free = [r for r in rows if r.name not in mine and not _alive(r.lease_until, now)]
        keep = sorted(mine, key=lambda n: int(n.rsplit("/", 1)[1]))[:share]
        drop = [n for n in mine if n not in keep]
        held: dict[int, str] = {}
        for n in keep:
            held[int(n.rsplit("/", 1)[1])] = mine[n].token
        for row in free:
            if len(held) >= share:
                break
            if row.holder is not None and row.holder != self.holder:  # it died holding it
                metrics.LEASE_TAKEOVERS.labels(self.group).inc()
            token = secrets.token_hex(8)
            await conn.execute(
                sa.update(leases)
                .where(leases.c.name == row.name)
                .values(holder=self.holder, token=token, lease_until=until)
            )
            held[int(row.name.rsplit("/", 1)[1])] = token
        if keep:
            await conn.execute(
                sa.update(leases).where(leases.c.name.in_(keep)).values(lease_until=until)
            )
        if drop:
            await _release(conn, drop, self.holder)
        self.held = held
        return held

    async def release_all(self, conn: AsyncConnection) -> None:
        names = [self.name(p) for p in self.held]
        names.append(f"{self.group}/member/{self.holder}")
        await _release(conn, names, self.holder)
        self.held = {}


async def tokens_still_held(
    conn: AsyncConnection, group: str, held: dict[int, str], holder: str
) -> set[int]:
    """Lock and check the leases: the partitions whose token is unchanged since we took them."""
    if not held:
        return set()
    names = {f"{group}/{p}": p for p in held}
    sql = store_of(conn).sql
    check = sql.once(
        "leases.check",
        lambda: sql.lock_row(
            sa.select(leases.c.name, leases.c.token, leases.c.holder).where(
                sql.among_param(leases.c.name, "b_names")
            )
        ),
    )
    rows = await direct.execute(conn, check, {"b_names": list(names)})
    return {names[r.name] for r in rows if r.holder == holder and r.token == held[names[r.name]]}


def _alive(until: datetime | None, now: datetime) -> bool:
    return until is not None and until > now


async def _ensure(conn: AsyncConnection, names: Iterable[str]) -> None:
    insert = store_of(conn).sql.insert(leases)
    await conn.execute(insert.on_conflict_do_nothing(), [{"name": n} for n in names])


async def _release(conn: AsyncConnection, names: list[str], holder: str) -> None:
    await conn.execute(
        sa.update(leases)
        .where(leases.c.name.in_(names), leases.c.holder == holder)
        .values(holder=None, lease_until=None)
    )
