"""The operator console: every run, message, callback and dead letter, in a browser.

``create_console(store)`` is an ASGI app (FastAPI) to serve alone (`convergent console`) or to
mount in any app (``app.mount("/console", create_console(store))``; `convergent serve` does).
Server-rendered (Jinja2) with vendored htmx and CSS: no build step, no CDN, works offline. Every
page and action needs an admin API key (`convergent keys create NAME --admin`). See
docs/console.md.
"""

import importlib.util

from convergent.errors import MissingExtra

if (
    importlib.util.find_spec("jinja2") is None
    or importlib.util.find_spec("python_multipart") is None
):
    raise MissingExtra("console", "the operator console")

from convergent.console.actions import ACTIONS, Action, Outcome, perform, register_action
from convergent.console.app import create_console

__all__ = ["ACTIONS", "Action", "Outcome", "create_console", "perform", "register_action"]
