"""Migration convergent_0009 moves a retrying step's first attempt time out of its result."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from convergent.store import Store
from convergent.store.revisions import alembic_config
from convergent.workflows import run_steps_of


async def test_first_attempt_times_move_to_their_column(blank_database_url: str) -> None:
    run_id = uuid.uuid4()
    first = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with Store(blank_database_url) as store:
        async with store.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "convergent_0007"))
            steps = sa.table(
                "convergent_run_steps",
                *(sa.column(c) for c in ("run_id", "seq", "kind", "name", "status")),
                sa.column("idempotency_key"),
                sa.column("attempts"),
                sa.column("result", sa.JSON()),
                sa.column("updated_at", sa.DateTime(timezone=True)),
            )
            for seq, status, result in [
                (1, "completed", {"first_attempt_at": "kept as a result"}),
                (2, "retrying", {"first_attempt_at": first.isoformat()}),
            ]:
                await conn.execute(
                    steps.insert().values(
                        run_id=run_id
                        if blank_database_url.startswith("postgresql")
                        else run_id.hex,
                        seq=seq,
                        kind="step",
                        name=f"s{seq}",
                        status=status,
                        idempotency_key=f"k{seq}",
                        attempts=1,
                        result=result,
                        updated_at=first,
                    )
                )
        async with store.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "head"))
        done, retrying = await run_steps_of(store, run_id)
    assert done.result == {"first_attempt_at": "kept as a result"}
    assert done.first_attempt_at is None
    assert retrying.result is None
    assert retrying.first_attempt_at == first
