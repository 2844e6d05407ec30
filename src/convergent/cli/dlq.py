"""`convergent dlq list|show|retry|discard`: dead letters from every source."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, print_json, run_async
from convergent.cli.relay import Imports, import_modules

dlq_app = typer.Typer(help="Dead letters: messages, runs and deliveries that gave up.")
app.add_typer(dlq_app, name="dlq")


async def _with_store(database_url: str | None, fn: Any) -> Any:
    async with checked_store(database_url) as store:
        return await fn(store)


@dlq_app.command("list")
def list_(
    database_url: DatabaseUrl = None,
    source: Annotated[str | None, typer.Option(help="outbox, consumer, workflow, webhook")] = None,
    status: Annotated[str, typer.Option(help="dead, retried, discarded or all")] = "dead",
    limit: int = 100,
    json_output: JsonOutput = False,
) -> None:
    """List dead letters, oldest first."""
    from convergent.outbox.dlq import list_dead_letters

    async def go(store: Any) -> list[Any]:
        async with store.read() as conn:
            return await list_dead_letters(conn, source=source, status=status, limit=limit)

    rows = run_async(_with_store(database_url, go))
    if json_output:
        print_json([dict(r._mapping) for r in rows])
        return
    table = Table("id", "source", "name", "key", "attempts", "status", "reason")
    for r in rows:
        table.add_row(
            str(r.id), r.source, r.name, r.key or "", str(r.attempts), r.status, r.reason[:80]
        )
    console.print(table)


@dlq_app.command()
def show(dead_letter_id: str, database_url: DatabaseUrl = None) -> None:
    """Print one dead letter as JSON."""
    from convergent.outbox.dlq import get_dead_letter

    async def go(store: Any) -> Any:
        async with store.read() as conn:
            return await get_dead_letter(conn, dead_letter_id)

    row = run_async(_with_store(database_url, go))
    out = {
        k: (str(v) if k in ("id", "created_at", "resolved_at") and v else v)
        for k, v in row._mapping.items()
    }
    console.print_json(json.dumps(out, default=str))


@dlq_app.command()
def retry(dead_letter_id: str, database_url: DatabaseUrl = None, imports: Imports = None) -> None:
    """Hand a dead letter back to its source (republish, re-run...)."""
    from convergent.outbox import dlq

    import_modules(imports)
    row = run_async(_with_store(database_url, lambda s: dlq.retry(s, dead_letter_id)))
    console.print(f"[green]retried[/] {row.id} ({row.source} {row.name})")


@dlq_app.command()
def discard(dead_letter_id: str, database_url: DatabaseUrl = None) -> None:
    """Mark a dead letter as handled without retrying it."""
    from convergent.outbox import dlq

    row = run_async(_with_store(database_url, lambda s: dlq.discard(s, dead_letter_id)))
    console.print(f"discarded {row.id}")
