"""`convergent relay` as its own process: it publishes, and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from convergent.outbox import emit
from convergent.store import Store
from convergent.store.schema import leases, log_entries
from tests.contract.transports.brokers import unique_topic


async def test_the_relay_process_publishes_and_stops_cleanly_on_sigterm(
    store: Store, database_url: str, tmp_path: Path
) -> None:
    topic = unique_topic()
    env = {k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"}
    env["CONVERGENT_DATABASE_URL"] = database_url
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - a child we poll below
            [sys.executable, "-m", "convergent", "relay"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with store.begin() as conn:
            await emit(conn, topic, "k", "tick", {"seq": 1})
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            async with store.read() as conn:
                if await conn.scalar(sa.select(sa.func.count()).select_from(log_entries)):
                    break
            assert proc.poll() is None, log.read_text()
            assert asyncio.get_running_loop().time() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "relay stopped after publishing 1 messages" in log.read_text()
    async with store.read() as conn:
        held = await conn.scalar(
            sa.select(sa.func.count()).select_from(leases).where(leases.c.holder.is_not(None))
        )
    assert held == 0  # its partitions are free for the next relay at once
