"""The ``convergent`` command.

Each module in this package registers its commands on ``app``; installed packages add theirs
through the ``convergent.commands`` entry point (the reference shop adds demo, serve, psp, drill).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from convergent import eventloop
from convergent.errors import ConvergentError, MissingExtra

try:
    from convergent.cli.app import app, explain, fail
except MissingExtra as exc:  # `pip install convergent` without the cli extra
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(1) from None

__all__ = ["app", "main"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")

for _plugin in entry_points(group="convergent.commands"):
    _plugin.load()  # importing the module registers its commands on `app`


def main() -> None:
    eventloop.tune_gc()  # a process of its own: its collector is ours to set
    try:
        app()
    except ConvergentError as exc:  # raised outside `run_async`, e.g. by a plug-in's command
        fail(explain(exc))
        raise SystemExit(1) from None
