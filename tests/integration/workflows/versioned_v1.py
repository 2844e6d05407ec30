"""The code of deploy 1 (see test_versions.py): an order workflow and version 1 of shipping."""

from __future__ import annotations

from convergent.workflows import StepContext, WorkflowContext, step, workflow
from tests.integration.workflows.flows import record_effect
from tests.integration.workflows.versioned_shipping_v1 import shipping

__all__ = ["order", "shipping"]


@step(name="tests.versioned.mark")
async def mark(ctx: StepContext, order_id: str, what: str) -> str:
    await record_effect(ctx, what)
    return what


@workflow(name="tests.versioned.order")
async def order(ctx: WorkflowContext, order_id: str) -> list[str]:
    reserved = await mark(order_id, "reserve")
    await ctx.wait_for("go")
    return [reserved, await mark(order_id, "ship")]
