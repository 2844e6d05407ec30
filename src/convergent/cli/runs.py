"""`convergent runs list|show|cancel|resume|retry-step ID`: what workflow runs are doing, step
by step, and the operator's actions on them (each recorded in the run's history)."""

from __future__ import annotations

import getpass
import json
import uuid
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, fail, print_json, run_async

__all__ = ["runs_app"]

runs_app = typer.Typer(help="Inspect and operate workflow runs.", no_args_is_help=True)
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
            _short(run.error or (f"waiting for {run.waiting_for}" if run.waiting_for else None)),
        )
    console.print(table)


@runs_app.command("show")
def show_command(run_id: str, database_url: DatabaseUrl = None) -> None:
    """Show one run: its steps, attempts, errors and timeline."""
    from convergent.workflows import history, run_steps_of, status

    parsed = _run_id(run_id)

    async def go() -> tuple[Any, list[Any], list[Any]]:
        async with checked_store(database_url) as store:
            return (
                await status(store, parsed),
                await run_steps_of(store, parsed),
                await history(store, parsed),
            )

    run, steps, actions = run_async(go())
    colour = _COLOURS.get(run.status, "cyan")
    console.print(f"[bold]{run.workflow}[/] {run.id}  [{colour}]{run.status}[/]  key={run.key}")
    console.print(f"created {run.created_at.isoformat()}  updated {run.updated_at.isoformat()}")
    if run.version != "1":
        console.print(f"version {run.version}")
    if run.waiting_for:
        console.print(f"[yellow]waiting for:[/] {run.waiting_for}")
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
    for a in actions:
        console.print(
            f"{a.at.isoformat(timespec='seconds')}  {a.actor}  {a.action}  {a.outcome}"
            + (f"  {a.detail}" if a.detail else "")
        )


def _run_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise fail(f"{raw!r} is not a run id: copy one from `convergent runs list`") from None


def actor() -> str:
    """Who an action from this shell is recorded as."""
    return f"cli:{getpass.getuser()}"


async def _in_transaction(database_url: str | None, fn: Any) -> Any:
    async with checked_store(database_url) as store, store.begin() as conn:
        return await fn(conn)


@runs_app.command("cancel")
def cancel_command(run_id: str, database_url: DatabaseUrl = None) -> None:
    """Cancel a run: its saga undoes the steps it completed, then it ends cancelled."""
    from convergent.errors import RunNotResumable
    from convergent.workflows import cancel, status

    parsed = _run_id(run_id)

    async def go() -> None:
        async with checked_store(database_url) as store:
            run = await status(store, parsed)
            if run.done:
                raise RunNotResumable(f"run {parsed} is already {run.status}: nothing to cancel")
            async with store.begin() as conn:
                await cancel(conn, parsed, actor=actor())

    run_async(go())
    console.print(f"cancel requested for run {parsed}: it compensates, then ends cancelled")


@runs_app.command("resume")
def resume_command(
    run_id: str,
    database_url: DatabaseUrl = None,
    from_step: Annotated[
        int | None, typer.Option(help="run again from this position (see `runs show`)")
    ] = None,
) -> None:
    """Resume a failed or dead-lettered run from its last checkpoint (deploy the fix first)."""
    from convergent.workflows import resume

    parsed = _run_id(run_id)
    at = run_async(
        _in_transaction(
            database_url, lambda c: resume(c, parsed, from_step=from_step, actor=actor())
        )
    )
    console.print(f"[green]resumed[/] run {parsed} from position {at}")


@runs_app.command("retry-step")
def retry_step_command(run_id: str, database_url: DatabaseUrl = None) -> None:
    """Run the step waiting out a retry backoff now."""
    from convergent.workflows import retry_step

    parsed = _run_id(run_id)
    seq = run_async(_in_transaction(database_url, lambda c: retry_step(c, parsed, actor=actor())))
    console.print(f"step at position {seq} of run {parsed} is due now")
