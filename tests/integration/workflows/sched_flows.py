"""Scheduled workflows for the tests, importable by worker subprocesses (``--import``).

The step appends a row per execution (no idempotency), so a tick run twice shows as two rows.
"""

from __future__ import annotations

import os

import sqlalchemy as sa

from convergent.store import Store
from convergent.workflows import StepContext, WorkflowContext, step, workflow
from convergent.workflows.schedules import schedule

sched_metadata = sa.MetaData()
ticks_seen = sa.Table(
    "wf_ticks_seen",
    sched_metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
)

_stores: dict[str, Store] = {}


def _store() -> Store:
    url = os.environ["WF_TEST_DATABASE_URL"]
    if url not in _stores:
        _stores[url] = Store(url)
    return _stores[url]


@step
async def note(ctx: StepContext, label: str) -> None:
    store = _store()
    async with store.begin() as conn:
        await conn.execute(sa.insert(ticks_seen).values(run_id=str(ctx.run_id), label=label))


@workflow(name="tests.sched.report")
async def report(ctx: WorkflowContext, label: str) -> str:
    await note(label)
    return label


#: daily at midnight UTC; the crash test moves its next tick into the past
nightly = schedule(report, every=86400, args=("nightly",), name="tests-nightly")
