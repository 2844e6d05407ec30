"""`convergent asyncapi`: an AsyncAPI 3.0 document of the declared topics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from convergent.cli.app import BrokerUrl, app, console, fail
from convergent.cli.worker import import_app


@app.command()
def asyncapi(
    import_: Annotated[
        list[str],
        typer.Option(
            "--import",
            help="module declaring your topics and consumers; required, repeatable",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path | None, typer.Option(help="write the document here (default: standard output)")
    ] = None,
    title: Annotated[str | None, typer.Option(help="info.title (default: the modules)")] = None,
    app_version: Annotated[str, typer.Option(help="info.version")] = "0.0.0",
    broker_url: BrokerUrl = None,
) -> None:
    """Write an AsyncAPI 3.0 document: a channel per topic with its kind, key, payload schema,
    CloudEvents headers and NATS/Kafka bindings; an operation per consumer group."""
    from convergent.outbox.asyncapi import asyncapi_document
    from convergent.outbox.topics import TOPICS

    imported = import_app(import_)
    if not TOPICS:
        raise fail("no topics declared: pass --import with the module that declares them")
    document = asyncapi_document(
        title=title or ", ".join(imported),
        version=app_version,
        broker_url=broker_url,
    )
    text = json.dumps(document, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    output.write_text(text)
    console.print(f"wrote {output} ({len(document['channels'])} channels)")
