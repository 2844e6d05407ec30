"""`convergent schedules list|pause|resume|trigger|forget`: workflows started on a schedule."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer
from rich.table import Table

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, print_json, run_async

__all__ = ["schedules_app"]

schedules_app = typer.Typer(
    help="Schedules: workflows started on a cron expression or interval.", no_args_is_help=True
)
app.add_typer(schedules_app, name="schedules")


@schedules_app.command("list")
def list_command(database_url: DatabaseUrl = None, json_output: JsonOutput = False) -> None:
    """List the schedules the workers declared, with their next tick."""
    from convergent.workflows.schedules import list_schedules

    async def go() -> list[Any]:
        async with checked_store(database_url) as store:
            return await list_schedules(store)

    found = run_async(go())
    if json_output:
        print_json([asdict(s) for s in found])
        return
    table = Table("name", "workflow", "when", "time zone", "catch-up", "state", "next", "last")
    for s in found:
        when = s.cron if s.cron is not None else f"every {s.every_seconds:g}s"
        table.add_row(
            s.name,
            s.workflow,
            when,
            s.timezone,
            s.catch_up,
            "[yellow]paused[/]" if s.paused else "[green]active[/]",
            s.next_at.isoformat(timespec="seconds") if s.next_at else "",
            s.last_tick_at.isoformat(timespec="seconds") if s.last_tick_at else "",
        )
    console.print(table)


def _act(name: str, database_url: str | None, action: str, done: str) -> None:
    from convergent.cli.runs import actor
    from convergent.workflows import schedules

    async def go() -> None:
        async with checked_store(database_url) as store:
            await getattr(schedules, action)(store, name, actor=actor())

    run_async(go())
    console.print(f"schedule {name} {done}")


@schedules_app.command("pause")
def pause_command(name: str, database_url: DatabaseUrl = None) -> None:
    """Stop firing a schedule (a worker still declaring it keeps it paused)."""
    _act(name, database_url, "pause", "paused")


@schedules_app.command("resume")
def resume_command(name: str, database_url: DatabaseUrl = None) -> None:
    """Fire a paused schedule again, from its next tick after now."""
    _act(name, database_url, "resume", "resumed: the ticks of the pause are skipped")


@schedules_app.command("trigger")
def trigger_command(name: str, database_url: DatabaseUrl = None) -> None:
    """Start one run of a schedule now (a worker's scheduler starts it, once)."""
    _act(name, database_url, "trigger", "triggered: a worker starts its run")


@schedules_app.command("forget")
def forget_command(name: str, database_url: DatabaseUrl = None) -> None:
    """Remove a schedule no worker declares any more (a worker still declaring it writes it
    again when it starts)."""
    _act(name, database_url, "forget", "forgotten")
