"""A fleet queue and its workflow for the tests, importable by worker subprocesses (``--import``).

Each run's step records when it ran and in which process, so a test can count the runs that
overlapped across the fleet.
"""

from __future__ import annotations

import asyncio
import os
import time

import sqlalchemy as sa

from convergent.store import Store
from convergent.workflows import StepContext, WorkflowContext, step, workflow
from convergent.workflows.queues import fleet_queue

queue_metadata = sa.MetaData()
spans = sa.Table(
    "wf_queue_spans",
    queue_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("began", sa.Float(), nullable=False),
    sa.Column("ended", sa.Float(), nullable=False),
)

#: at most 3 runs at once in the whole fleet (each test worker holds at most 2)
FLEET = fleet_queue("tests-fleet", concurrency=3)

_stores: dict[str, Store] = {}


def _store() -> Store:
    url = os.environ["WF_TEST_DATABASE_URL"]
    if url not in _stores:
        _stores[url] = Store(url)
    return _stores[url]


@step
async def busy(ctx: StepContext, seconds: float) -> None:
    began = time.time()
    await asyncio.sleep(seconds)
    store = _store()
    async with store.begin() as conn:
        await conn.execute(
            sa.insert(spans).values(
                run_id=str(ctx.run_id), pid=os.getpid(), began=began, ended=time.time()
            )
        )


@workflow(name="tests.queues.busy", queue="tests-fleet")
async def busy_run(ctx: WorkflowContext, seconds: float) -> None:
    await busy(seconds)


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(b, 1) for b, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, delta in edges:
        now += delta
        best = max(best, now)
    return best
