"""`convergent keys create|revoke|list`: API keys for the console and admin routes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.auth import create_key, list_keys, revoke_key
from convergent.cli.app import DatabaseUrl, app, console, run_async
from convergent.store import Store

__all__ = ["keys_app"]

T = TypeVar("T")

keys_app = typer.Typer(help="API keys: issue, revoke, list.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _in_store(
    database_url: str | None, work: Callable[[Store, AsyncConnection], Awaitable[T]]
) -> T:
    async def go() -> T:
        async with Store(database_url) as store, store.begin() as conn:
            return await work(store, conn)

    return run_async(go())


@keys_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="who or what holds the key, e.g. ops-alice")],
    admin: Annotated[bool, typer.Option(help="may use the console and operator actions")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a key; prints the secret key once (only a hash of it is stored)."""
    key, secret = _in_store(database_url, lambda s, conn: create_key(conn, name, admin=admin))
    role = "admin key" if key.admin else "key"
    typer.echo(secret)  # alone on stdout, so `KEY=$(convergent keys create ...)` works
    typer.echo(
        f"{role} {key.name} created; store the key above now, it is not shown again", err=True
    )


@keys_app.command("revoke")
def revoke_command(name: str, database_url: DatabaseUrl = None) -> None:
    """Revoke a key; every process refuses it within a few seconds."""
    key = _in_store(database_url, lambda s, conn: revoke_key(conn, name))
    console.print(f"revoked {key.name}")


@keys_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List keys (names and prefixes; never the keys)."""
    found = _in_store(database_url, lambda _s, conn: list_keys(conn))
    if as_json:
        typer.echo(json.dumps([k.to_dict() for k in found], indent=2))
        return
    table = Table("name", "prefix", "admin", "created", "last used", "revoked")
    for k in found:
        table.add_row(
            k.name,
            k.prefix,
            "yes" if k.admin else "",
            k.created_at.isoformat(timespec="seconds"),
            k.last_used_at.isoformat(timespec="seconds") if k.last_used_at else "",
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    console.print(table)
