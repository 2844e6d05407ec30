"""The shop's commands, added to ``convergent`` through the ``convergent.commands`` entry point."""

from convergent_shop import settings  # noqa: F401 - registers the shop's settings
from convergent_shop.cli import demo, drill, psp, serve

__all__ = ["demo", "drill", "psp", "serve"]
