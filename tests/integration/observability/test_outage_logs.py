"""A worker whose link to NATS is cut: one line when it goes, a few while it stays down, one
when it is back, and never a traceback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import sqlalchemy as sa

from convergent.outbox import emit
from convergent.store import Store
from convergent.store.schema import outbox
from tests.integration.observability.app import PINGS
from tests.integration.observability.conftest import spawn, stop
from tests.integration.observability.proxy import CuttableProxy


async def ping(store: Store, key: str) -> None:
    async with store.begin() as conn:
        await emit(conn, PINGS, key, "ping", {"key": key})


async def outbox_empty(store: Store, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with store.read() as conn:
            if not (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar():
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the outbox did not drain")


def text_of(log: Path) -> str:
    return log.read_text()


async def wait_for_line(log: Path, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in text_of(log):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no line with {text!r} in:\n{text_of(log)}")


async def test_a_cut_broker_link_is_a_few_lines_and_no_traceback(
    sqlite_url: str, nats_port: int, tmp_path: Path
) -> None:
    proxy = CuttableProxy(nats_port)
    proxy.start()
    log = tmp_path / "worker.log"
    store = Store(sqlite_url)
    worker = spawn(
        [
            "worker",
            "--import",
            "tests.integration.observability.app",
            "--poll-interval",
            "0.2",
            "--database-url",
            sqlite_url,
            "--broker-url",
            f"nats://127.0.0.1:{proxy.port}",
        ],
        log,
    )
    try:
        await wait_for_line(log, "worker started")
        assert f"broker=nats://127.0.0.1:{proxy.port}" in text_of(log)  # says what it uses
        assert "event_loop=uvloop" in text_of(log)  # the `fast` extra is installed
        await ping(store, "before")
        await outbox_empty(store)

        proxy.cut()
        before = len(text_of(log).splitlines())
        for n in range(10):  # work keeps arriving during the outage
            await ping(store, f"during-{n}")
            await asyncio.sleep(1.0)
        during = text_of(log).splitlines()[before:]
        assert "Traceback" not in "\n".join(during)
        assert 1 <= len(during) <= 6, "\n".join(during)
        assert any("unreachable" in line for line in during), "\n".join(during)

        proxy.restore()
        await outbox_empty(store, timeout=60)
        await wait_for_line(log, "is back")
        assert "Traceback" not in text_of(log)
    finally:
        stop(worker)
        proxy.cut()
        await store.close()
    print(text_of(log))
