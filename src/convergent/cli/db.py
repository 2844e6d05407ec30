"""`convergent migrate` and `convergent version`."""

from __future__ import annotations

from convergent import __version__
from convergent.cli.app import DatabaseUrl, app, console, run_async
from convergent.store import Store


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Create or upgrade convergent's tables (safe to run again, and from several processes)."""

    async def go() -> str:
        store = Store(database_url)
        try:
            await store.migrate()
        finally:
            await store.close()
        return store.url.render_as_string(hide_password=True)

    url = run_async(go())
    console.print(f"[green]migrated[/] {url}")
