"""Resources: persisted state machines, optimistic locking and transition history.

Declare a `StateMachine`, bind it to your own table with `ResourceTable`, and move rows with
``transition`` (one conditional UPDATE); every change leaves a history row in the same
transaction and wakes waiters (`wait_for`).
"""

from convergent.resources.confirm import confirm_once
from convergent.resources.conflicts import ConflictPolicy, Merge, update_with_policy
from convergent.resources.history import HistoryEntry, list_history, record_history
from convergent.resources.machine import Action, StateMachine
from convergent.resources.table import CHANNEL, ResourceTable
from convergent.resources.waiting import wait_for

__all__ = [
    "CHANNEL",
    "Action",
    "ConflictPolicy",
    "HistoryEntry",
    "Merge",
    "ResourceTable",
    "StateMachine",
    "confirm_once",
    "list_history",
    "record_history",
    "update_with_policy",
    "wait_for",
]
