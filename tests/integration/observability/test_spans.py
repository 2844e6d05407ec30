"""Spans recorded in one process with an SDK installed (in a subprocess of its own: a tracer
provider is installed once per process and would trace every later test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import asyncio, json

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from convergent.idempotency.client import IdempotentClient
from convergent.outbox import Consumer, Relay, declare_topic, emit
from convergent.store import Store
from convergent.transports.embedded import EmbeddedTransport
from convergent.workflows import Worker, start, status, step, workflow

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
topic = declare_topic("spans-test")
seen = {}


def provider_app(request: httpx.Request) -> httpx.Response:
    seen["traceparent"] = request.headers.get("traceparent")
    seen["key"] = request.headers.get("Idempotency-Key")
    seen["calls"] = seen.get("calls", 0) + 1
    return httpx.Response(503 if seen["calls"] == 1 else 201)  # the first attempt fails


@step()
async def charge(ctx, order: str) -> int:
    mock = httpx.MockTransport(provider_app)
    async with httpx.AsyncClient(transport=mock, base_url="http://psp") as http:
        client = IdempotentClient(http, sleep=lambda _: asyncio.sleep(0))
        return (await client.post("/payments", key=ctx.idempotency_key)).status_code


@workflow(name="spans.followup")
async def followup(ctx, order: str) -> int:
    return await charge(order)


async def handle(conn, message) -> None:  # a consumer that starts a run
    await start(conn, followup, message.key, key=message.id)


async def main() -> None:
    store = Store("sqlite+aiosqlite:///./spans.db")
    await store.migrate()
    with trace.get_tracer("test").start_as_current_span("request"):
        async with store.begin() as conn:
            await emit(conn, topic, "o-1", "placed", {})
    transport = EmbeddedTransport(store)
    relay = Relay(store, transport)
    await relay.run_once()
    await relay.release()
    consumer = Consumer(store, transport, topic, "spans-group", handle)
    while not await consumer.run_once(timeout=0.2):
        pass
    await consumer.close()
    worker = Worker(store, poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(200):
        done = [s for s in spans.get_finished_spans() if s.name == "workflow spans.followup"]
        if done:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    await store.close()


asyncio.run(main())
out = [
    {"name": s.name, "trace": f"{s.context.trace_id:032x}", "attributes": dict(s.attributes or {})}
    for s in spans.get_finished_spans()
]
print(json.dumps({"spans": out, "seen": {k: v for k, v in seen.items() if k != "calls"}}))
"""


def test_a_request_its_event_the_consumer_the_run_it_starts_and_its_call_are_one_trace(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.splitlines()[-1])
    spans = found["spans"]
    request = next(s for s in spans if s["name"] == "request")
    ours = [s for s in spans if s["trace"] == request["trace"]]
    names = [s["name"] for s in ours]
    for wanted in (
        "create spans-test",
        "publish spans-test",
        "process spans-test",
        "workflow spans.followup",
        "step charge",
        "POST",
    ):
        assert wanted in names, names
    calls = [s for s in ours if s["name"] == "POST"]
    assert len(calls) == 2  # the 503, then the retry with the same key
    assert {c["attributes"]["convergent.idempotency_key"] for c in calls} == {found["seen"]["key"]}
    assert calls[1]["attributes"]["http.request.resend_count"] == 1
    assert found["seen"]["traceparent"].split("-")[1] == request["trace"]
    # the loops' own transactions start no traces of their own
    assert {s["trace"] for s in spans if s["name"] == "transaction"} <= {request["trace"]}
