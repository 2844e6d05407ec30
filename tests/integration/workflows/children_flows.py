"""Parent and child workflows for the tests, importable by worker subprocesses (``--import``).

The kid's step appends a row per execution (no idempotency): a step run twice shows twice.
"""

from __future__ import annotations

from convergent.errors import ChildFailed, PermanentError
from convergent.workflows import WorkflowContext, workflow
from tests.integration.workflows.sched_flows import note


@workflow(name="tests.children.kid")
async def kid(ctx: WorkflowContext, n: int) -> int:
    await note(f"kid-{n}")
    return n * 2


@workflow(name="tests.children.parent")
async def parent(ctx: WorkflowContext, n: int) -> int:
    first = await ctx.child(kid, n)
    second = await ctx.child("tests.children.kid", n + 1)  # by name works too
    return int(first + second)


@workflow(name="tests.children.failing_kid")
async def failing_kid(ctx: WorkflowContext) -> None:
    raise PermanentError("the kid cannot")


@workflow(name="tests.children.catches")
async def catches(ctx: WorkflowContext) -> str:
    try:
        await ctx.child(failing_kid)
    except ChildFailed as exc:
        return f"caught: {exc.message}"
    return "not reached"


@workflow(name="tests.children.waiting_kid")
async def waiting_kid(ctx: WorkflowContext) -> str:
    return str(await ctx.wait_for("go"))


@workflow(name="tests.children.patient")
async def patient(ctx: WorkflowContext) -> str:
    return await ctx.child(waiting_kid)


@workflow(name="tests.children.asks_unknown")
async def asks_unknown(ctx: WorkflowContext) -> None:
    await ctx.child("tests.children.no_such_workflow")


@workflow(name="tests.children.spawner")
async def spawner(ctx: WorkflowContext) -> str:
    kid_id = await ctx.start_child(waiting_kid)
    return str(kid_id)


#: whether the flaky kid fails; a test flips it to "deploy the fix"
FLAKY = {"fail": True}


@workflow(name="tests.children.flaky_kid")
async def flaky_kid(ctx: WorkflowContext, n: int) -> int:
    if FLAKY["fail"]:
        raise PermanentError("the kid has a bug")
    await note(f"flaky-{n}")
    return n


@workflow(name="tests.children.trusting")
async def trusting(ctx: WorkflowContext, n: int) -> int:
    return int(await ctx.child(flaky_kid, n)) + 100
