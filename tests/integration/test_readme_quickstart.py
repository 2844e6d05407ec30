"""The README's quickstart does what the README says: one run, one event, the answer replayed."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from convergent.workflows import result

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_source() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    (block,) = [b for b in blocks if "lifespan(store)" in b]
    return str(block)


async def test_quickstart_runs_once_emits_once_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "quickstart"}
    exec(compile(quickstart_source(), "README.md", "exec"), namespace)
    app, store = namespace["app"], namespace["store"]
    headers = {"X-Api-Key": "me", "Idempotency-Key": "pay-1"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quickstart") as http:
            first = await http.post("/payments", json={"amount": 5}, headers=headers)
            again = await http.post("/payments", json={"amount": 5}, headers=headers)
        assert first.status_code == 202
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        run_id = uuid.UUID(first.json()["run"])
        assert (await result(store, run_id, wait=20)).startswith("charged 5 with key")
        async with store.read() as conn:
            runs = (await conn.execute(sa.text("SELECT COUNT(*) FROM convergent_runs"))).scalar()
        assert runs == 1
        assert await published(store) == 1
    await store.close()


async def published(store: Any, within: float = 15.0) -> int:
    """Events in the embedded log once the relay has emptied the outbox."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with store.read() as conn:
            waiting = (
                await conn.execute(sa.text("SELECT COUNT(*) FROM convergent_outbox"))
            ).scalar()
            logged = (await conn.execute(sa.text("SELECT COUNT(*) FROM convergent_log"))).scalar()
        if not waiting or asyncio.get_running_loop().time() > deadline:
            return int(logged or 0)
        await asyncio.sleep(0.1)
