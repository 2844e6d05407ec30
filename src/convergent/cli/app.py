"""The Typer application every command module registers on."""

from __future__ import annotations

import json
import re
from collections.abc import Coroutine
from datetime import date, datetime
from typing import Annotated, Any, TypeVar

from convergent.errors import MissingExtra

try:
    import typer
except ImportError as exc:
    raise MissingExtra("cli", "the convergent command") from exc
from rich.console import Console
from rich.text import Text
from sqlalchemy.exc import DBAPIError

from convergent import eventloop
from convergent.errors import ConvergentError, StoreUnavailable, TransportError

__all__ = [
    "DatabaseUrl",
    "JsonOutput",
    "app",
    "console",
    "explain",
    "fail",
    "print_json",
    "run_async",
    "run_server",
]

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


JsonOutput = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)  # UUIDs, enums


def print_json(value: Any) -> None:
    """Plain JSON on stdout (no colours, no wrapping), for scripts and ``jq``."""
    typer.echo(json.dumps(value, indent=2, default=_jsonable))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error with its fix and return the Exit to raise."""
    # one line however long (no wrapping), and no markup read into "[Errno 111]"
    err_console.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    return typer.Exit(code)


# "(sqlalchemy.dialects.postgresql.asyncpg.ProgrammingError) <class '…CatalogNameError'>: "
_DRIVER_NOISE = re.compile(r"\([\w.]+\) (<class '[\w.]+'>: )?")
_MISSING_TABLE = re.compile(r"no such table: (\w+)|relation \"(\w+)\" does not exist")


def explain(exc: ConvergentError) -> str:
    """The error's message on one line, with the fix where the message lacks one."""
    message = _DRIVER_NOISE.sub("", exc.message.splitlines()[0] if exc.message else exc.code)
    if isinstance(exc, StoreUnavailable):
        message += (
            "; check --database-url (or CONVERGENT_DATABASE_URL) and that the database is running"
        )
    elif isinstance(exc, TransportError):
        message += "; check --broker-url (or CONVERGENT_BROKER_URL) and that the broker is running"
    return message


def run_server(application: Any, **options: Any) -> None:
    """``uvicorn.run(application, **options)`` on the chosen event loop, start-up frozen first
    (`convergent.eventloop`)."""
    import uvicorn

    eventloop.freeze_start_up()
    uvicorn.run(application, loop=eventloop.loop_name(), **options)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; an expected failure becomes one line naming the fix, and exit status 1."""
    try:
        return eventloop.run(coro)
    except ConvergentError as exc:
        raise fail(explain(exc)) from None
    except DBAPIError as exc:  # a table dropped or never created after the start-up check
        missing = _MISSING_TABLE.search(str(exc.orig))
        if missing is None:
            raise
        table = missing.group(1) or missing.group(2)
        raise fail(
            f"the database has no table {table}: run `convergent migrate` "
            "(with the same --database-url)"
        ) from None
