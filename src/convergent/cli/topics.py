"""`convergent topics`: declared topics and their payload JSON Schemas."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from convergent.cli.app import JsonOutput, app, console, print_json
from convergent.cli.relay import Imports, import_modules
from convergent.topics import TOPICS


@app.command()
def topics(
    imports: Imports = None,
    schema: Annotated[bool, typer.Option(help="print each topic's JSON Schema")] = False,
    json_output: JsonOutput = False,
) -> None:
    """List declared topics (import the modules that declare them with --import)."""

    import_modules(imports)
    if json_output:
        print_json(
            [
                {
                    "name": name,
                    "kind": str(t.kind),
                    "partitions": t.partitions,
                    "schema": t.schema_name,
                    "json_schema": t.json_schema(),
                }
                for name, t in sorted(TOPICS.items())
            ]
        )
        return
    if schema:
        out = {name: t.json_schema() for name, t in sorted(TOPICS.items())}
        console.print_json(json.dumps(out))
        return
    for name, t in sorted(TOPICS.items()):
        model = t.schema_name or "any JSON"
        console.print(f"{name}\t{t.kind}\tpartitions={t.partitions}\t{model}")
