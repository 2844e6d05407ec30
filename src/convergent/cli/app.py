"""The Typer application every command module registers on."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

from convergent.errors import MissingExtra

try:
    import typer
except ImportError as exc:
    raise MissingExtra("cli", "the convergent command") from exc
from rich.console import Console
from rich.text import Text

from convergent.errors import ConvergentError

__all__ = ["DatabaseUrl", "app", "console", "fail", "run_async"]

T = TypeVar("T")

app = typer.Typer(
    name="convergent",
    help="Make state converge across services despite timeouts, crashes, retries and duplicates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="CONVERGENT_DATABASE_URL",
        help="sqlite+aiosqlite:///./convergent.db (default) or postgresql+asyncpg://user@host/db",
        show_default=False,
    ),
]
BrokerUrl = Annotated[
    str | None,
    typer.Option(
        "--broker-url",
        envvar="CONVERGENT_BROKER_URL",
        help="embedded:// (default), nats://host:4222 or kafka://host:9092",
        show_default=False,
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error with its fix and return the Exit to raise."""
    # one line however long (no wrapping), and no markup read into "[Errno 111]"
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; a ConvergentError becomes a one-line message and exit status 1."""
    try:
        return asyncio.run(coro)
    except ConvergentError as exc:
        raise fail(exc.message) from None
