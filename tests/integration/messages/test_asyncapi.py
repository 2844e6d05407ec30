"""`convergent asyncapi` and the shop's /asyncapi.json: valid AsyncAPI 3.0 documents of the
declared topics, checked against the official JSON Schema (tests/schemas/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import convergent_shop.background  # noqa: F401 - declares the shop's topics and consumers
from convergent.cli import app
from convergent.outbox.asyncapi import KIND_EXTENSION, asyncapi_document
from convergent.outbox.consumer import CONSUMERS
from convergent.outbox.topics import TOPICS, Topic, TopicKind
from convergent.store import Store
from convergent_shop.app import create_app
from convergent_shop.customers import CustomerState

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def _errors(validator: jsonschema.Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


def test_the_command_writes_a_valid_document_of_every_topic(
    tmp_path: Path, validator: jsonschema.Draft7Validator
) -> None:
    out_file = tmp_path / "asyncapi.json"
    args = ["asyncapi", "--import", "convergent_shop.background", "--output", str(out_file)]
    args += ["--broker-url", "nats://user:pw@nats.internal:4222"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    document = json.loads(out_file.read_text())
    assert _errors(validator, document) == []
    assert document["asyncapi"] == "3.0.0"
    assert set(document["channels"]) == set(TOPICS)
    assert document["servers"]["broker"] == {
        "host": "nats.internal:4222",
        "protocol": "nats",
        "description": "The broker the relay publishes to.",
    }
    assert "pw" not in out_file.read_text()

    customers = document["channels"]["customers"]
    assert customers[KIND_EXTENSION] == "entity"
    assert customers["address"] == "customers.{key}"  # the NATS subject
    assert customers["bindings"]["kafka"]["topic"] == "customers"
    assert customers["bindings"]["kafka"]["topicConfiguration"] == {"cleanup.policy": ["compact"]}
    assert document["channels"]["shop.orders"][KIND_EXTENSION] == "event"

    message = document["components"]["messages"]["customers"]
    assert set(message["headers"]["required"]) >= {"ce-id", "ce-source", "ce-type", "ce-time"}
    payload = message["payload"]["anyOf"]
    assert payload[1] == {"type": "null", "description": "a tombstone: deleted"}
    model = document["components"]["schemas"][payload[0]["$ref"].rsplit("/", 1)[1]]
    assert model["properties"].keys() == CustomerState.model_json_schema()["properties"].keys()

    operations = document["operations"].values()
    groups = {op["x-convergent-group"] for op in operations if op["action"] == "receive"}
    assert groups == {spec.group for spec in CONSUMERS}


def test_the_validator_rejects_a_broken_document(validator: jsonschema.Draft7Validator) -> None:
    """The schema check is not vacuous: a wrong binding type fails it."""
    document = asyncapi_document(title="t")
    broken = copy.deepcopy(document)
    broken["channels"]["customers"]["bindings"]["kafka"]["partitions"] = "eight"
    assert _errors(validator, document) == []
    assert _errors(validator, broken) != []


class Quote(BaseModel):
    sku: str
    price: int


def test_request_and_reply_topics_carry_their_correlation_headers(
    validator: jsonschema.Draft7Validator,
) -> None:
    request = Topic("pricing.requests", Quote, TopicKind.REQUEST)
    reply = Topic("pricing.replies", None, TopicKind.REPLY)
    document = asyncapi_document(title="pricing", topics=[request, reply], consumers=[])
    assert _errors(validator, document) == []
    messages = document["components"]["messages"]
    assert messages["pricing.requests"]["correlationId"] == {
        "location": "$message.header#/correlationid"
    }
    assert {"correlationid", "replyto"} <= set(messages["pricing.requests"]["headers"]["required"])
    assert "replyto" not in messages["pricing.replies"]["headers"]["required"]
    assert document["channels"]["pricing.requests"][KIND_EXTENSION] == "request"


def test_no_topics_is_one_line_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty_app.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("convergent.outbox.topics.TOPICS", {})
    out = CliRunner().invoke(app, ["asyncapi", "--import", "empty_app"])
    assert out.exit_code == 1
    assert "no topics declared: pass --import" in out.output


async def test_the_shop_serves_its_document(
    sqlite_url: str, validator: jsonschema.Draft7Validator
) -> None:
    async with Store(sqlite_url) as store:
        shop = create_app(store, migrate=False, loops=False)
        transport = httpx.ASGITransport(app=shop)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert _errors(validator, document) == []
    assert document["info"]["title"] == "convergent shop"
    assert {"customers", "shop.orders", "shop.bookings"} <= set(document["channels"])
