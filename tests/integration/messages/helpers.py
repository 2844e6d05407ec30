"""A user-side effects table and small drivers for relay and consumer passes."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.messages import Message
from convergent.outbox import Consumer, Relay
from convergent.store import Store
from convergent.store.schema import outbox

user_meta = sa.MetaData()
effects = sa.Table(
    "test_effects",
    user_meta,
    sa.Column("n", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(64), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=True),
)


async def create_effects(store: Store) -> None:
    async with store.begin() as conn:
        await conn.run_sync(user_meta.create_all)


async def record_effect(conn: AsyncConnection, message: Message) -> None:
    """The handler: one row per handled message, so a double effect shows up as two rows."""
    seq = message.data.get("seq") if isinstance(message.data, dict) else None
    await conn.execute(sa.insert(effects).values(message_id=message.id, key=message.key, seq=seq))


async def effect_rows(store: Store) -> list[sa.Row[tuple[int, str, str, int | None]]]:
    async with store.read() as conn:
        return list((await conn.execute(sa.select(effects).order_by(effects.c.n))).all())


async def outbox_count(store: Store) -> int:
    async with store.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(outbox)) or 0)


async def drain_outbox(relay: Relay, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await outbox_count(relay.store):
        await relay.run_once()
        assert asyncio.get_running_loop().time() < deadline, "relay did not drain the outbox"


async def consume_until(consumer: Consumer, store: Store, count: int, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(await effect_rows(store)) < count:
        await consumer.run_once(timeout=0.3)
        assert asyncio.get_running_loop().time() < deadline, (
            f"consumer applied {len(await effect_rows(store))} of {count}"
        )
    await consumer.run_once(timeout=0.3)  # one more pass: nothing extra may arrive
