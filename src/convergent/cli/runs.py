"""`convergent runs list|show ID`: what workflow runs are doing, step by step."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, fail, print_json, run_async

__all__ = ["runs_app"]

runs_app = typer.Typer(help="Inspect workflow runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

_COLOURS = {"completed": "green", "failed": "red", "cancelled": "yellow", "compensating": "magenta"}


def _short(value: Any, width: int = 40) -> str:
    text = "" if value is None else json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


@runs_app.command("list")
def list_command(
    database_url: DatabaseUrl = None,
    status: Annotated[list[str], typer.Option(help="only runs in this state")] = [],  # noqa: B006 - typer default
    workflow: Annotated[str | None, typer.Option(help="only runs of this workflow")] = None,
    limit: Annotated[int, typer.Option(help="most recent first, at most this many")] = 50,
    json_output: JsonOutput = False,
) -> None:
    """List recent runs."""
    from convergent.workflows import list_runs

    async def go() -> list[Any]:
        async with checked_store(database_url) as store:
            return await list_runs(store, status_in=status, workflow=workflow, limit=limit)

    found = run_async(go())
    if json_output:
        print_json([asdict(run) for run in found])
        return
    table = Table("id", "workflow", "status", "attempts", "created", "error")
    for run in found:
        colour = _COLOURS.get(run.status, "cyan")
        table.add_row(
            str(run.id),
            run.workflow,
            f"[{colour}]{run.status}[/]",
            str(run.attempts),
            run.created_at.isoformat(timespec="seconds"),
            _short(run.error),
        )
    console.print(table)


@runs_app.command("show")
def show_command(run_id: str, database_url: DatabaseUrl = None) -> None:
    """Show one run: its steps, attempts, errors and timeline."""
    from convergent.workflows import run_steps_of, status

    try:
        parsed = uuid.UUID(run_id)
    except ValueError:
        raise fail(f"{run_id!r} is not a run id: copy one from `convergent runs list`") from None

    async def go() -> tuple[Any, list[Any]]:
        async with checked_store(database_url) as store:
            return await status(store, parsed), await run_steps_of(store, parsed)

    run, steps = run_async(go())
    colour = _COLOURS.get(run.status, "cyan")
    console.print(f"[bold]{run.workflow}[/] {run.id}  [{colour}]{run.status}[/]  key={run.key}")
    console.print(f"created {run.created_at.isoformat()}  updated {run.updated_at.isoformat()}")
    if run.error:
        console.print(f"[red]error:[/] {run.error}")
    if run.result is not None:
        console.print(f"result: {_short(run.result, 200)}")
    table = Table("#", "kind", "name", "status", "attempts", "at", "next attempt", "result / error")
    for s in steps:
        table.add_row(
            str(s.seq),
            s.kind,
            s.name,
            s.status,
            str(s.attempts),
            s.updated_at.isoformat(timespec="seconds"),
            s.next_attempt_at.isoformat(timespec="seconds") if s.next_attempt_at else "",
            _short(s.error or s.result),
        )
    console.print(table)
