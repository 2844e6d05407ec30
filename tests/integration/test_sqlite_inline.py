"""SQLite statements run on the event loop's thread; another process's write lock is waited for
on the loop (which goes on meanwhile), never inside SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.store import Store
from convergent.store.sqlite_inline import InlineConnection

pytestmark = pytest.mark.asyncio


async def _driver_connection(store: Store) -> object:
    async with store.read() as conn:
        raw = await conn.get_raw_connection()
        return raw.driver_connection


async def test_statements_run_on_the_loop_thread_by_default(tmp_path: Path) -> None:
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        assert isinstance(await _driver_connection(store), InlineConnection)
        async with store.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('x'), ('y')"))
        async with store.read() as conn:
            rows = (await conn.execute(sa.text("SELECT v FROM t ORDER BY id"))).scalars().all()
            timeout = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar()
        assert rows == ["x", "y"]
        assert timeout == 0  # waiting for the lock is ours, on the loop
    finally:
        await store.close()


async def test_the_thread_comes_back_when_switched_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENT_SQLITE_INLINE", "0")
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    try:
        driver = await _driver_connection(store)
        assert not isinstance(driver, InlineConnection)
        async with store.read() as conn:
            assert (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar() == 30000
    finally:
        await store.close()


async def test_a_write_waits_for_another_process_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    store = Store(f"sqlite+aiosqlite:///{path}")
    try:
        async with store.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        # another "process": a plain sqlite3 connection holding the write lock for a while
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t (v) VALUES ('other')")
        released = threading.Event()

        def release_later() -> None:
            time.sleep(0.5)
            other.execute("COMMIT")
            released.set()

        threading.Thread(target=release_later, daemon=True).start()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while not released.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        async with store.begin() as conn:  # waits for the other's COMMIT
            assert released.is_set()
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('ours')"))
        await ticker
        assert ticks >= 10  # the loop kept running while the write waited
        async with store.read() as conn:
            rows = (await conn.execute(sa.text("SELECT v FROM t ORDER BY id"))).scalars().all()
        assert rows == ["other", "ours"]
        other.close()
    finally:
        await store.close()
