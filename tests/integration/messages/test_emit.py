"""emit: CloudEvents attributes, trace context, and the CLI's view of topics and dead letters."""

from __future__ import annotations

import asyncio
import uuid

import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from typer.testing import CliRunner

from convergent.cli import app
from convergent.ids import uuid7
from convergent.outbox import emit
from convergent.store import Store
from convergent.store.schema import dead_letters, outbox
from tests.contract.transports.brokers import unique_topic


async def test_an_emitted_row_carries_cloudevents_attributes(store: Store) -> None:
    topic = unique_topic()
    async with store.begin() as conn:
        sent = await emit(conn, topic, "o-1", "shop.order.placed", {"n": 1}, source="/orders")
    async with store.read() as conn:
        row = (await conn.execute(sa.select(outbox))).one()
    env = row.envelope
    assert (env["id"], env["type"], env["source"], env["subject"]) == (
        sent.id,
        "shop.order.placed",
        "/orders",
        "o-1",
    )
    assert env["specversion"] == "1.0"
    assert env["datacontenttype"] == "application/json"
    assert uuid.UUID(env["id"]).version == 7


async def test_the_active_trace_context_travels_as_traceparent(store: Store) -> None:
    topic = unique_topic()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("place order") as span:
        async with store.begin() as conn:
            sent = await emit(conn, topic, "o-1", "t", {"n": 1})
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert sent.headers["traceparent"].split("-")[1] == trace_id


async def add_dead_letter(database_url: str, letter_id: uuid.UUID) -> None:
    store = Store(database_url)
    try:
        async with store.begin() as conn:
            await conn.execute(
                dead_letters.insert().values(
                    id=letter_id,
                    source="outbox",
                    source_ref="r",
                    name="orders",
                    key="k",
                    payload={},
                    reason="broker said no",
                    attempts=3,
                    created_at=store.clock.now(),
                )
            )
    finally:
        await store.close()


def test_the_cli_lists_and_discards_dead_letters(database_url: str) -> None:
    letter_id = uuid7()
    asyncio.run(add_dead_letter(database_url, letter_id))
    runner = CliRunner()
    env = {"CONVERGENT_DATABASE_URL": database_url, "COLUMNS": "200"}
    listed = runner.invoke(app, ["dlq", "list"], env=env)
    assert listed.exit_code == 0
    assert str(letter_id) in listed.output
    shown = runner.invoke(app, ["dlq", "show", str(letter_id)], env=env)
    assert "broker said no" in shown.output
    assert runner.invoke(app, ["dlq", "discard", str(letter_id)], env=env).exit_code == 0
    assert str(letter_id) not in runner.invoke(app, ["dlq", "list"], env=env).output
    missing = runner.invoke(app, ["dlq", "retry", str(uuid7())], env=env)
    assert missing.exit_code == 1


def test_the_cli_prints_topic_schemas() -> None:
    result = CliRunner().invoke(
        app, ["topics", "--schema", "--import", "convergent_shop.customers"]
    )
    assert result.exit_code == 0
    assert '"CustomerState"' in result.output
