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
from convergent.retry import RetryPolicy
from convergent.store import Store

try:
    __version__ = version("convergent")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "Clock",
    "ConvergentError",
    "ManualClock",
    "Message",
    "RetryPolicy",
    "Store",
    "SystemClock",
    "__version__",
    "fault_point",
    "new_id",
    "uuid7",
]
