"""Every connection an engine is given knows its Store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from convergent.clock import ManualClock
from convergent.errors import ConfigurationError
from convergent.outbox import declare_topic, emit
from convergent.store import Store, store_of
from convergent.store.schema import outbox

topic = declare_topic("tests.store_of")


async def outbox_times(store: Store) -> list[object]:
    async with store.read() as conn:
        return list((await conn.scalars(sa.select(outbox.c.created_at))).all())


async def test_every_connection_a_store_hands_out_knows_it(store: Store) -> None:
    async with store.begin() as conn:
        assert store_of(conn) is store
    async with store.read() as conn:
        assert store_of(conn) is store
    async with store.statement() as conn:
        assert store_of(conn) is store
    async with store.statement(write=True) as conn:
        assert store_of(conn) is store
    async with store.autocommit() as conn:
        assert store_of(conn) is store


async def test_an_unknown_connection_is_refused_with_the_fix(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(ConfigurationError, match=r"store\.adopt\(conn\).*Store\(engine="):
                store_of(conn)
            with pytest.raises(ConfigurationError, match="adopt"):
                await emit(conn, topic, "k", "t", {})
    finally:
        await engine.dispose()


async def test_a_store_on_the_users_engine_knows_its_connections_and_sessions(
    database_url: str,
) -> None:
    engine = create_async_engine(database_url)
    clock = ManualClock()
    store = Store(engine=engine, clock=clock)
    try:
        assert store.engine is engine
        async with engine.begin() as conn:  # the user's own connection, untouched by us
            assert store_of(conn) is store
            await emit(conn, topic, "k1", "t", {"n": 1})
        sessions = async_sessionmaker(engine)
        async with sessions() as session, session.begin():
            conn = await session.connection()
            assert store_of(conn) is store
            await emit(conn, topic, "k2", "t", {"n": 2})
        assert await outbox_times(store) == [clock.now(), clock.now()]  # the store's clock
    finally:
        await store.close()
    async with engine.connect() as conn:  # close() left the user's engine to the user
        assert await conn.scalar(sa.text("SELECT 1")) == 1
        with pytest.raises(ConfigurationError):
            store_of(conn)  # ...and it no longer answers for a closed store
    await engine.dispose()


async def test_an_engine_serves_one_store_at_a_time(database_url: str) -> None:
    engine = create_async_engine(database_url)
    first = Store(engine=engine)
    try:
        with pytest.raises(ConfigurationError, match="already serves"):
            Store(engine=engine)
    finally:
        await first.close()
    second = Store(engine=engine)  # free again once the first one closed
    async with second.begin() as conn:  # its set-up was not applied twice (one BEGIN)
        assert store_of(conn) is second
    await second.close()
    await engine.dispose()


async def test_a_store_refuses_an_engine_it_cannot_use(database_url: str) -> None:
    sync_engine = sa.create_engine("sqlite://")
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        Store(engine=sync_engine)  # type: ignore[arg-type]
    engine = create_async_engine(database_url)
    with pytest.raises(ConfigurationError, match="not both"):
        Store(database_url, engine=engine)
    await engine.dispose()


async def test_adopt_tags_the_callers_connection_for_its_life(store: Store) -> None:
    engine = create_async_engine(store.url)
    try:
        async with engine.begin() as conn:
            assert await store.adopt(conn) is conn
            assert store_of(conn) is store
            await emit(conn, topic, "k", "t", {})
        async with engine.connect() as conn:  # a later connection is not adopted
            with pytest.raises(ConfigurationError):
                store_of(conn)
    finally:
        await engine.dispose()
    assert len(await outbox_times(store)) == 1


async def test_adopt_takes_an_async_session_and_joins_its_transaction(store: Store) -> None:
    engine = create_async_engine(store.url)
    try:
        async with AsyncSession(engine) as session:
            async with session.begin():
                conn = await store.adopt(session)
                assert store_of(conn) is store
                await emit(conn, topic, "kept", "t", {})
            with pytest.raises(RuntimeError):
                async with session.begin():
                    await emit(await store.adopt(session), topic, "lost", "t", {})
                    raise RuntimeError("the session's change failed")
    finally:
        await engine.dispose()
    async with store.read() as conn:
        keys = (await conn.scalars(sa.select(outbox.c.key))).all()
    assert keys == ["kept"]  # the second emit rolled back with the session
