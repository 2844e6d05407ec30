"""`--json` on every list command: plain JSON on stdout that scripts can parse."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from convergent.cli import app
from convergent.clock import utcnow
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import dead_letters
from convergent.webhooks import create_endpoint
from convergent.workflows import start
from tests.integration.workflows.test_engine import twice


def _json(*args: str) -> object:
    out = CliRunner().invoke(app, [*args, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


@pytest.fixture
def seeded(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CONVERGENT_WEBHOOK_ALLOW_HOSTS", "example.test")

    async def seed() -> dict[str, str]:
        async with Store(database_url) as store:
            run = await start(store, twice, 3, key="json")
            letter = uuid7()
            async with store.begin() as conn:
                await conn.execute(
                    dead_letters.insert().values(
                        id=letter,
                        source="consumer",
                        source_ref="r1",
                        name="orders.events",
                        key="o-1",
                        payload={"a": 1},
                        reason="handler kept failing",
                        attempts=5,
                        created_at=utcnow(),
                    )
                )
                endpoint, _ = await create_endpoint(
                    conn, "https://example.test/hook", now=utcnow(), event_types=["order.*"]
                )
            return {"run": str(run), "letter": str(letter), "endpoint": str(endpoint.id)}

    return asyncio.run(seed())


def test_list_commands_print_json(database_url: str, seeded: dict[str, str]) -> None:
    db = ["--database-url", database_url]
    runs = _json("runs", "list", *db)
    assert isinstance(runs, list)
    assert [(r["id"], r["key"], r["status"]) for r in runs] == [(seeded["run"], "json", "pending")]

    letters = _json("dlq", "list", *db)
    assert isinstance(letters, list)
    assert [(d["id"], d["reason"], d["payload"]) for d in letters] == [
        (seeded["letter"], "handler kept failing", {"a": 1})
    ]

    endpoints = _json("webhooks", "endpoints", "list", *db)
    assert isinstance(endpoints, list)
    assert [(e["id"], e["url"], e["event_types"]) for e in endpoints] == [
        (seeded["endpoint"], "https://example.test/hook", ["order.*"])
    ]
    assert "secret" not in json.dumps(endpoints)
    assert _json("webhooks", "attempts", seeded["endpoint"], *db) == []


def test_topics_print_json_with_their_schemas() -> None:
    topics = _json("topics", "--import", "convergent_shop.customers")
    assert isinstance(topics, list)
    customers = next(t for t in topics if t["name"] == "customers")
    assert customers["kind"] == "entity"
    assert customers["schema"] == "CustomerState"
    assert customers["json_schema"]["type"] == "object"
