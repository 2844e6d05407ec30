"""`convergent purge`: one round of retention and compaction now (`--dry-run` counts instead)."""

from __future__ import annotations

from typing import Annotated

import typer

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, print_json, run_async
from convergent.cli.relay import Imports, import_modules


@app.command()
def purge(
    database_url: DatabaseUrl = None,
    imports: Imports = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")
    ] = False,
    json_output: JsonOutput = False,
) -> None:
    """Delete what outlived its retention (CONVERGENT_*_RETENTION) and compact entity topics of
    the embedded log, in small batches; the maintenance loop does the same every minute."""
    from convergent.maintenance import Retention
    from convergent.maintenance import purge as purge_round

    import_modules(imports)  # topic declarations: which topics are entity topics
    retention = Retention.from_settings()

    async def go() -> dict[str, int]:
        async with checked_store(database_url) as store:
            return await purge_round(store, dry_run=dry_run, retention=retention)

    counts = run_async(go())
    if json_output:
        print_json({"dry_run": dry_run, "counts": counts})
        return
    verb = "would delete" if dry_run else "deleted"
    for name, count in counts.items():
        console.print(f"{verb} {count} {name}")
