"""The code of deploy 2 (see test_versions.py): the order workflow gains a fraud check behind a
change point; shipping is rewritten as version 2 (version 1 is no longer imported)."""

from __future__ import annotations

from convergent.workflows import StepContext, WorkflowContext, step, workflow
from tests.integration.workflows.flows import record_effect


@step(name="tests.versioned.mark")
async def mark(ctx: StepContext, order_id: str, what: str) -> str:
    await record_effect(ctx, what)
    return what


@workflow(name="tests.versioned.order")
async def order(ctx: WorkflowContext, order_id: str) -> list[str]:
    reserved = await mark(order_id, "reserve")
    checked = [await mark(order_id, "fraud")] if await ctx.patched("fraud-check") else []
    await ctx.wait_for("go")
    return [reserved, *checked, await mark(order_id, "ship")]


@workflow(name="tests.versioned.shipping", version="2")
async def shipping(ctx: WorkflowContext, order_id: str) -> str:
    await ctx.wait_for("go")
    packed = await mark(order_id, "pack")
    return f"v2:{packed}"
