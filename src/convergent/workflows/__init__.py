"""Durable workflows and sagas.

A ``@workflow`` calls ``@step`` functions; each step's result is checkpointed before the workflow
goes on, so after a crash any worker replays the run and finished steps return their recorded
results. See docs/workflows.md.
"""

from convergent.workflows._api import (
    RUNS_CHANNEL,
    RunInfo,
    StepInfo,
    cancel,
    enqueue,
    list_runs,
    result,
    run_steps_of,
    send,
    start,
    status,
    submit,
)
from convergent.workflows._context import LeaseLost, StepContext, WorkflowContext
from convergent.workflows._operate import RunAction, history, resume, retry_step
from convergent.workflows._registry import Step, Workflow, get_workflow, registered, step, workflow
from convergent.workflows._worker import Worker
from convergent.workflows.saga import Saga

# plugs child runs into RunContext.child (children builds on the modules above)
from convergent.workflows import children as _children  # noqa: F401  isort: skip

__all__ = [
    "RUNS_CHANNEL",
    "LeaseLost",
    "RunAction",
    "RunInfo",
    "Saga",
    "Step",
    "StepContext",
    "StepInfo",
    "Worker",
    "Workflow",
    "WorkflowContext",
    "cancel",
    "enqueue",
    "get_workflow",
    "history",
    "list_runs",
    "registered",
    "result",
    "resume",
    "retry_step",
    "run_steps_of",
    "send",
    "start",
    "status",
    "step",
    "submit",
    "workflow",
]
