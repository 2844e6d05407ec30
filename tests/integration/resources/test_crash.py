"""A process killed mid-transition leaves neither the change nor its history."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

from convergent.store import Store
from tests.contract.resources.conftest import TICKETS, new_ticket, state_of, user_metadata

ROOT = Path(__file__).parents[3]
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from convergent.store import Store
    from tests.contract.resources.conftest import TICKETS

    async def main(url, ticket_id):
        store = Store(url)
        async with store.begin() as conn:
            await TICKETS.transition(conn, uuid.UUID(ticket_id), "start")
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_a_crash_before_commit_leaves_no_change_and_no_history(database_url: str) -> None:
    store = Store(database_url)
    try:
        async with store.begin() as conn:
            await conn.run_sync(user_metadata.create_all)
        resource = TICKETS
        ticket = await new_ticket(store, resource)
        env = {**os.environ, "CONVERGENT_FAULTS": "resources.after_transition_before_commit"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SCRIPT,
            database_url,
            str(ticket.ticket_id),
            env=env,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == -9, stderr.decode()
        async with store.read() as conn:
            assert await state_of(conn, ticket.ticket_id) == ("open", 1)
            assert [e.action for e in await resource.history(conn, ticket.ticket_id)] == ["create"]
    finally:
        await store.close()
