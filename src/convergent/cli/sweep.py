"""`convergent sweep`: purge what has outlived its retention."""

from __future__ import annotations

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, app, console, run_async
from convergent.idempotency.engine import purge_expired_keys


@app.command()
def sweep(database_url: DatabaseUrl = None) -> None:
    """Delete idempotency keys past their retention (safe to run at any time, and often)."""

    async def go() -> int:
        async with checked_store(database_url) as store:
            return await purge_expired_keys(store)

    purged = run_async(go())
    console.print(f"purged {purged} expired idempotency keys")
