"""`convergent drill-app`: the drill, pointed at your own workflows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from convergent.cli.app import DatabaseUrl, app, console, fail, run_async


@app.command("drill-app")
def drill_app(
    module: Annotated[str, typer.Option("--import", help="module that declares your workflows")],
    workflow: Annotated[str, typer.Option(help="the @workflow name to run")],
    args: Annotated[str, typer.Option(help="JSON list of the workflow's arguments")] = "[]",
    runs: Annotated[int, typer.Option(help="runs to start")] = 100,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    kills: Annotated[int, typer.Option(help="SIGKILLs of workers")] = 3,
    crash_point: Annotated[
        str | None, typer.Option(help="fault point the workers' first lives die at")
    ] = None,
    duration: Annotated[float, typer.Option(help="seconds over which kills are spread")] = 20.0,
    settle_timeout: Annotated[float, typer.Option(help="seconds to wait for every run")] = 60.0,
    database_url: DatabaseUrl = None,
    report_dir: Annotated[Path, typer.Option(help="where logs and report.json go")] = Path(
        "reports/drill-app"
    ),
    seed: Annotated[int | None, typer.Option(help="seed for a repeatable run")] = None,
) -> None:
    """Kill and restart workers running YOUR workflows; exit 1 if a run is stuck or your
    module's ``async def check(store) -> list[str]`` reports a violation."""
    from convergent.drill.appdrill import AppDrillOptions, run_app_drill

    try:
        arguments = json.loads(args)
    except json.JSONDecodeError as exc:
        raise fail(f"--args must be a JSON list, e.g. --args '[\"a\", 1]': {exc}") from None
    if not isinstance(arguments, list):
        raise fail("--args must be a JSON list, e.g. --args '[\"a\", 1]'")
    options = AppDrillOptions(
        module=module,
        workflow=workflow,
        args=arguments,
        runs=runs,
        workers=workers,
        kills=kills,
        duration=duration,
        settle_timeout=settle_timeout,
        database_url=database_url,
        crash_point=crash_point,
        report_dir=report_dir,
        seed=seed,
    )
    try:
        report = run_async(run_app_drill(options))
    except ModuleNotFoundError as exc:
        hint = "run from its directory or set PYTHONPATH"
        raise fail(f"cannot import {module!r} ({exc}); {hint}") from None
    console.print_json(data={k: v for k, v in report.items() if k != "events"})
    if not report["ok"]:
        raise fail(f"stuck runs {report['stuck']} or violations {report['violations']}")
    console.print(f"[green]all {report['runs']} runs ended; every check held[/]")
