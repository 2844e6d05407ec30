"""convergent: state that converges across services despite timeouts, crashes and duplicates.

The public API is what ``__all__`` lists; everything else may change between releases.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from convergent.clock import Clock, ManualClock, SystemClock
from convergent.errors import ConvergentError
from convergent.faults import fault_point
from convergent.ids import new_id, uuid7
from convergent.messages import Message

# the engines, after the core they build on
from convergent.outbox import Consumer, Relay, declare_topic, emit
from convergent.resources import Action, ResourceTable, StateMachine
from convergent.retry import RetryPolicy
from convergent.store import Store, store_of
from convergent.workflows import (
    Saga,
    StepContext,
    Worker,
    WorkflowContext,
    start,
    step,
    submit,
    workflow,
)

try:
    __version__ = version("convergent")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "Action",
    "Clock",
    "Consumer",
    "ConvergentError",
    "ManualClock",
    "Message",
    "Relay",
    "ResourceTable",
    "RetryPolicy",
    "Saga",
    "StateMachine",
    "StepContext",
    "Store",
    "SystemClock",
    "Worker",
    "WorkflowContext",
    "__version__",
    "declare_topic",
    "emit",
    "fault_point",
    "new_id",
    "start",
    "step",
    "store_of",
    "submit",
    "uuid7",
    "workflow",
]
