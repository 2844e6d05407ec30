"""The public names of convergent.workflows, and what the decorators register."""

from __future__ import annotations

import pytest

import convergent.workflows as wf
from convergent.errors import UnknownWorkflow


def test_the_public_api_is_exactly_these_names() -> None:
    assert sorted(wf.__all__) == [
        "LeaseLost", "RUNS_CHANNEL", "RunAction", "RunInfo", "Saga", "Step", "StepContext",
        "StepInfo", "Worker", "Workflow", "WorkflowContext", "cancel", "enqueue", "get_workflow",
        "history", "list_runs", "registered", "result", "resume", "retry_step", "run_steps_of",
        "send", "start", "status", "step", "submit", "workflow",
    ]  # fmt: skip


def test_a_workflow_is_registered_under_its_name() -> None:
    @wf.workflow(name="tests.unit.registered")
    async def registered_here(ctx: wf.WorkflowContext) -> None:
        return None

    assert wf.get_workflow("tests.unit.registered") is registered_here


def test_an_unknown_workflow_name_says_which_module_to_import() -> None:
    with pytest.raises(UnknownWorkflow, match="--import"):
        wf.get_workflow("tests.unit.nobody")


def test_versions_of_a_workflow_live_side_by_side_and_new_runs_take_the_newest() -> None:
    @wf.workflow(name="tests.unit.versioned", version="10")
    async def ten(ctx: wf.WorkflowContext) -> None:
        return None

    @wf.workflow(name="tests.unit.versioned", version="9")
    async def nine(ctx: wf.WorkflowContext) -> None:
        return None

    assert wf.get_workflow("tests.unit.versioned") is ten
    assert wf.get_workflow("tests.unit.versioned", "9") is nine
    with pytest.raises(UnknownWorkflow, match="version '8'"):
        wf.get_workflow("tests.unit.versioned", "8")
