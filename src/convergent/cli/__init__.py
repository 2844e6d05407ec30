"""The ``convergent`` command. Each module in this package registers its commands on ``app``."""

from __future__ import annotations

import importlib
import pkgutil

from convergent.cli.app import app

__all__ = ["app", "main"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "app":
        importlib.import_module(f"{__name__}.{_module.name}")


def main() -> None:
    app()
