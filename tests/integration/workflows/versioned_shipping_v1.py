"""Version 1 of the shipping workflow: a worker keeps it registered beside version 2 until the
runs that started on it are done (see test_versions.py)."""

from __future__ import annotations

from convergent.workflows import StepContext, WorkflowContext, step, workflow
from tests.integration.workflows.flows import record_effect


@step(name="tests.versioned.label")
async def label(ctx: StepContext, order_id: str, what: str) -> str:
    await record_effect(ctx, what)
    return what


@workflow(name="tests.versioned.shipping", version="1")
async def shipping(ctx: WorkflowContext, order_id: str) -> str:
    await ctx.wait_for("go")
    return "v1:" + await label(order_id, "label")
