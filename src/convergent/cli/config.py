"""`convergent config`: the effective settings, where each came from, secrets masked."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from convergent import settings
from convergent.cli.app import JsonOutput, app, console, fail
from convergent.errors import ConfigurationError


@app.command("config")
def config_command(
    database_url: Annotated[
        str | None, typer.Option(help="as the other commands take it", show_default=False)
    ] = None,
    broker_url: Annotated[
        str | None, typer.Option(help="as the other commands take it", show_default=False)
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Show every CONVERGENT_* setting: its value (secrets masked) and where it came from."""
    try:
        rows = settings.effective({"database_url": database_url, "broker_url": broker_url})
    except ConfigurationError as exc:
        raise fail(exc.message) from None
    if json_output:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    table = Table("variable", "value", "from", "section")
    table.columns[0].no_wrap = True
    table.columns[1].overflow = "fold"
    for r in rows:
        table.add_row(r.variable, r.value, r.source, r.section)
    console.print(table)
