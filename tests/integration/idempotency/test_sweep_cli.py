from __future__ import annotations

import asyncio
from datetime import timedelta

from typer.testing import CliRunner

from convergent.cli import app
from convergent.clock import utcnow
from convergent.store import Store


async def seed(url: str) -> None:
    store = Store(url)
    now = utcnow()
    row = {"fingerprint": "fp", "status": "completed", "created_at": now - timedelta(days=2)}
    async with store.begin() as conn:
        await conn.execute(
            store.tables.idempotency_keys.insert(),
            [
                {**row, "scope": "s", "key": "old", "expires_at": now - timedelta(hours=1)},
                {**row, "scope": "s", "key": "new", "expires_at": now + timedelta(hours=1)},
            ],
        )
    await store.close()


def test_convergent_sweep_purges_expired_keys_only(database_url: str) -> None:
    asyncio.run(seed(database_url))
    result = CliRunner().invoke(app, ["sweep", "--database-url", database_url])
    assert result.exit_code == 0, result.output
    assert "purged 1 expired idempotency keys" in result.output
