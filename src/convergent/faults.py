"""Named crash points.

Code marks the boundaries where a crash matters with
``fault_point("relay.after_publish_before_mark")``.
They cost a set lookup unless ``CONVERGENT_FAULTS`` names one; then the process kills itself with
SIGKILL there, as a power cut would. ``name@N`` crashes on the N-th time the point is reached.
Tests and ``convergent drill --crash-points all`` use them to prove nothing is lost or doubled.
"""

from __future__ import annotations

import os
import signal
import sys

from convergent import settings

__all__ = ["FAULT_POINTS", "configure", "fault_point", "register"]

#: every point the package declares, with what a crash there means
FAULT_POINTS: dict[str, str] = {}

_armed: dict[str, int] = {}
_hits: dict[str, int] = {}


def register(name: str, description: str) -> str:
    """Declare a crash point (at import time) and return its name."""
    FAULT_POINTS[name] = description
    return name


def configure(spec: str | None) -> None:
    """Arm the points in ``spec`` (comma-separated ``name`` or ``name@N``); None or "" disarms."""
    _armed.clear()
    _hits.clear()
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, count = item.partition("@")
        _armed[name] = int(count) if count else 1


def fault_point(name: str) -> None:
    """Die here if this point is armed and its count is reached."""
    if not _armed or name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= _armed[name]:
        sys.stderr.write(f"convergent: crashing at fault point {name}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


configure(settings.raw("faults"))
