"""`convergent migrate` and `convergent version`."""

from __future__ import annotations

from typing import Annotated

import typer

from convergent import __version__, settings
from convergent.cli.app import DatabaseUrl, app, console, fail, run_async
from convergent.errors import ConfigurationError
from convergent.store import Store, normalise_url


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    sql: Annotated[
        bool,
        typer.Option(
            "--sql",
            help="print the DDL instead of applying it (for a DBA); the URL only picks the "
            "dialect, nothing connects",
        ),
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(help="with --sql: the revision the database is at (default: empty)"),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="change nothing; exit 1 unless the tables are at head")
    ] = False,
) -> None:
    """Create or upgrade convergent's tables (safe to run again, and from several processes)."""
    if sql:
        from convergent.store.revisions import migration_sql

        try:
            dialect = normalise_url(settings.database_url(database_url)).get_backend_name()
            ddl = migration_sql(dialect, since)
        except ConfigurationError as exc:
            raise fail(exc.message) from None
        typer.echo(ddl, nl=False)
        return

    async def go() -> str:
        async with Store(database_url) as store:
            if check:
                await store.check_schema()
            else:
                await store.migrate()
            state = await store.schema_state()
            where = store.url.render_as_string(hide_password=True)
            return f"{where} (at {state.revision}, recorded in {state.table})"

    where = run_async(go())
    console.print(f"[green]{'up to date' if check else 'migrated'}[/] {where}", soft_wrap=True)
