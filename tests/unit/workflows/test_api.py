"""The public names of convergent.workflows, and what the decorators register."""

from __future__ import annotations

import pytest

import convergent.workflows as wf
from convergent.errors import UnknownWorkflow


def test_the_public_api_is_exactly_these_names() -> None:
    assert sorted(wf.__all__) == [
        "RUNS_CHANNEL", "RunInfo", "Saga", "Step", "StepContext", "StepInfo", "Worker",
        "Workflow", "WorkflowContext", "cancel", "get_workflow", "list_runs", "registered",
        "result", "run_steps_of", "send", "start", "status", "step", "submit", "workflow",
    ]  # fmt: skip


def test_a_workflow_is_registered_under_its_name() -> None:
    @wf.workflow(name="tests.unit.registered")
    async def registered_here(ctx: wf.WorkflowContext) -> None:
        return None

    assert wf.get_workflow("tests.unit.registered") is registered_here


def test_an_unknown_workflow_name_says_which_module_to_import() -> None:
    with pytest.raises(UnknownWorkflow, match="--import"):
        wf.get_workflow("tests.unit.nobody")
