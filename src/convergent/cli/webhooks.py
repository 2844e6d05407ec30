"""`convergent webhooks ...`: manage callback endpoints, inspect attempts, resend and recover."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.cli._preflight import checked_store
from convergent.cli.app import DatabaseUrl, JsonOutput, app, console, fail, print_json, run_async
from convergent.store import Store
from convergent.webhooks import (
    create_endpoint,
    list_attempts,
    list_endpoints,
    recover,
    resend,
    rotate_secret,
    update_endpoint,
)

T = TypeVar("T")

webhooks_app = typer.Typer(help="Webhook callbacks: endpoints, attempts, resend, recover.")
endpoints_app = typer.Typer(help="Endpoints that receive callbacks.")
webhooks_app.add_typer(endpoints_app, name="endpoints")
app.add_typer(webhooks_app, name="webhooks")


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise fail(
            f"{raw!r} is not a {what} id; list them with `convergent webhooks endpoints list`"
        ) from None


def _in_store(
    database_url: str | None, work: Callable[[Store, AsyncConnection], Awaitable[T]]
) -> T:
    async def go() -> T:
        async with checked_store(database_url) as store, store.begin() as conn:
            return await work(store, conn)

    return run_async(go())


@endpoints_app.command("list")
def endpoints_list(database_url: DatabaseUrl = None, json_output: JsonOutput = False) -> None:
    """List endpoints (secrets are never shown)."""
    found = _in_store(database_url, lambda _s, conn: list_endpoints(conn))
    if json_output:
        print_json([asdict(e) for e in found])
        return
    table = Table("id", "url", "enabled", "event types", "description")
    for e in found:
        state = "yes" if e.enabled else f"no ({e.disabled_reason})"
        types = ", ".join(e.event_types) if e.event_types is not None else "*"
        table.add_row(str(e.id), e.url, state, types, e.description)
    console.print(table)


@endpoints_app.command("add")
def endpoints_add(
    url: Annotated[str, typer.Argument(help="http(s) URL that receives callbacks")],
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", "-t", help="repeat; globs like order.*")
    ] = None,
    description: Annotated[str, typer.Option(help="what this endpoint is for")] = "",
    database_url: DatabaseUrl = None,
) -> None:
    """Subscribe a URL; prints its signing secret, which is not shown again."""
    endpoint, secret = _in_store(
        database_url,
        lambda s, conn: create_endpoint(
            conn, url, now=s.clock.now(), event_types=event_type, description=description
        ),
    )
    console.print(f"endpoint [bold]{endpoint.id}[/]")
    console.print(f"secret   [bold]{secret}[/]  (store it now: it is not shown again)")


def _set_enabled(endpoint_id: str, enabled: bool, database_url: str | None) -> None:
    key = _uuid(endpoint_id, "endpoint")
    endpoint = _in_store(
        database_url,
        lambda s, conn: update_endpoint(conn, key, now=s.clock.now(), enabled=enabled),
    )
    console.print(f"{endpoint.id} {'enabled' if endpoint.enabled else 'disabled'}")


@endpoints_app.command("disable")
def endpoints_disable(endpoint_id: str, database_url: DatabaseUrl = None) -> None:
    """Stop sending to an endpoint (pending callbacks wait until it is enabled)."""
    _set_enabled(endpoint_id, False, database_url)


@endpoints_app.command("enable")
def endpoints_enable(endpoint_id: str, database_url: DatabaseUrl = None) -> None:
    """Resume sending to an endpoint."""
    _set_enabled(endpoint_id, True, database_url)


@endpoints_app.command("rotate")
def endpoints_rotate(
    endpoint_id: str,
    grace_hours: Annotated[float, typer.Option(help="hours the old secret keeps signing")] = 24.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a new secret; the old one keeps signing during the grace period."""
    key = _uuid(endpoint_id, "endpoint")
    grace = timedelta(hours=grace_hours)
    secret = _in_store(
        database_url, lambda s, conn: rotate_secret(conn, key, now=s.clock.now(), grace=grace)
    )
    console.print(f"secret [bold]{secret}[/]  (the previous one signs for {grace_hours:g} h more)")


@webhooks_app.command("attempts")
def attempts(
    endpoint_id: str,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 20,
    database_url: DatabaseUrl = None,
    json_output: JsonOutput = False,
) -> None:
    """Show an endpoint's latest delivery attempts."""
    key = _uuid(endpoint_id, "endpoint")
    found = _in_store(database_url, lambda _s, conn: list_attempts(conn, key, limit))
    if json_output:
        print_json([asdict(a) for a in found])
        return
    table = Table("time", "message", "try", "outcome", "status", "ms", "detail")
    for a in found:
        detail = a.error or (a.response_snippet or "")[:60]
        status = str(a.status_code or "")
        table.add_row(
            a.started_at.isoformat(timespec="seconds"),
            str(a.message_id),
            str(a.attempt),
            a.outcome,
            status,
            str(a.duration_ms),
            detail,
        )
    console.print(table)


@webhooks_app.command("resend")
def resend_command(
    message_id: str,
    endpoint: Annotated[str, typer.Option("--endpoint", help="endpoint id to send it to")],
    database_url: DatabaseUrl = None,
) -> None:
    """Send one message to an endpoint again (same webhook-id)."""
    msg, key = _uuid(message_id, "message"), _uuid(endpoint, "endpoint")
    _in_store(database_url, lambda s, conn: resend(conn, msg, key, store=s))
    console.print(f"queued {msg} for {key}")


@webhooks_app.command("recover")
def recover_command(
    endpoint_id: str,
    since: Annotated[
        datetime, typer.Option(help="ISO time; messages since then that failed are resent")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Resend every message since a time whose delivery to the endpoint failed."""
    key = _uuid(endpoint_id, "endpoint")
    when = since if since.tzinfo else since.replace(tzinfo=UTC)
    count = _in_store(database_url, lambda s, conn: recover(conn, key, when, store=s))
    console.print(f"queued {count} message(s) for {key}")
