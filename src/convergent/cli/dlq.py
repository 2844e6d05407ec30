"""`convergent dlq list|show|retry|discard`: dead letters from every source, one at a time or
every letter matching a filter; each action is recorded with who did it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, fail, print_json, run_async
from convergent.cli.relay import Imports, import_modules
from convergent.cli.runs import actor

dlq_app = typer.Typer(help="Dead letters: messages, runs and deliveries that gave up.")
app.add_typer(dlq_app, name="dlq")

Source = Annotated[str | None, typer.Option(help="outbox, consumer, workflow or webhook")]
Name = Annotated[str | None, typer.Option(help="topic, workflow or webhook endpoint id")]
Key = Annotated[str | None, typer.Option(help="the letter's key (message key, run key...)")]
All = Annotated[bool, typer.Option("--all", help="every dead letter matching the filters")]


async def _with_store(database_url: str | None, fn: Any) -> Any:
    async with checked_store(database_url) as store:
        return await fn(store)


@dlq_app.command("list")
def list_(
    database_url: DatabaseUrl = None,
    source: Source = None,
    status: Annotated[str, typer.Option(help="dead, retried, discarded or all")] = "dead",
    name: Name = None,
    key: Key = None,
    limit: int = 100,
    json_output: JsonOutput = False,
) -> None:
    """List dead letters, oldest first."""
    from convergent import dlq

    where = dlq.LetterFilter(source, status, name, key)
    rows = run_async(_with_store(database_url, lambda s: dlq.list_letters(s, where, limit=limit)))
    if json_output:
        print_json([r.to_json() for r in rows])
        return
    table = Table("id", "source", "name", "key", "attempts", "status", "reason")
    for r in rows:
        table.add_row(
            str(r.id), r.source, r.name, r.key or "", str(r.attempts), r.status, r.reason[:80]
        )
    console.print(table)


@dlq_app.command()
def show(dead_letter_id: str, database_url: DatabaseUrl = None) -> None:
    """Print one dead letter as JSON: its reason, attempts and payload."""
    from convergent import dlq

    row = run_async(_with_store(database_url, lambda s: dlq.show(s, dead_letter_id)))
    console.print_json(json.dumps(row.to_json(), default=str))


def _one_or_all(dead_letter_id: str | None, every: bool, filters: tuple[Any, ...]) -> None:
    if every == (dead_letter_id is not None):
        raise fail("give one DEAD_LETTER_ID, or --all with filters (--source, --name, --key)")
    if every and not any(filters):
        raise fail(
            "--all needs a filter (--source, --name or --key); to act on every dead "
            "letter say --source for each source"
        )


@dlq_app.command()
def retry(
    dead_letter_id: Annotated[str | None, typer.Argument()] = None,
    database_url: DatabaseUrl = None,
    imports: Imports = None,
    every: All = False,
    source: Source = None,
    name: Name = None,
    key: Key = None,
) -> None:
    """Hand dead letters back to their source: republish, resume the run, redeliver."""
    from convergent import dlq

    _one_or_all(dead_letter_id, every, (source, name, key))
    import_modules(imports)
    if dead_letter_id is not None:
        row = run_async(
            _with_store(database_url, lambda s: dlq.retry(s, dead_letter_id, actor=actor()))
        )
        console.print(f"[green]retried[/] {row.id} ({row.source} {row.name})")
        return
    where = dlq.LetterFilter(source, "dead", name, key)
    bulk = run_async(
        _with_store(database_url, lambda s: dlq.retry_matching(s, where, actor=actor()))
    )
    _report("retried", bulk)


@dlq_app.command()
def discard(
    dead_letter_id: Annotated[str | None, typer.Argument()] = None,
    database_url: DatabaseUrl = None,
    every: All = False,
    source: Source = None,
    name: Name = None,
    key: Key = None,
) -> None:
    """Mark dead letters as handled without retrying them (they are kept)."""
    from convergent import dlq

    _one_or_all(dead_letter_id, every, (source, name, key))
    if dead_letter_id is not None:
        row = run_async(
            _with_store(database_url, lambda s: dlq.discard(s, dead_letter_id, actor=actor()))
        )
        console.print(f"discarded {row.id}")
        return
    where = dlq.LetterFilter(source, "dead", name, key)
    bulk = run_async(
        _with_store(database_url, lambda s: dlq.discard_matching(s, where, actor=actor()))
    )
    _report("discarded", bulk)


def _report(verb: str, bulk: Any) -> None:
    console.print(f"{verb} {len(bulk.done)} dead letter(s)")
    for letter_id, why in bulk.failed.items():
        console.print(f"[red]not {verb}[/] {letter_id}: {why}")
    if bulk.failed:
        raise typer.Exit(1)
