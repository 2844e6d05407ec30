"""What tracing costs: the same workload with no OpenTelemetry SDK (off) and with one (on).

Workload (SQLite, embedded broker): N transactions that each emit one message and submit one
workflow run, then the relay publishes them all. Each mode runs in its own subprocess, alternately
off/on/off/on (the best round of each counts). Also printed: what the instrumentation's hooks cost
with no SDK (``tracing.enabled()``, emit's current-span check, a run's trace carrier), in ns per
message against the time a message takes, the figure behind "costs nothing measurable".

    python bench/tracing.py [--quick] [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path


async def workload(n: int, db: Path) -> float:
    from convergent.outbox import Relay, declare_topic, emit
    from convergent.store import Store
    from convergent.transports.embedded import EmbeddedTransport
    from convergent.workflows import StepContext, WorkflowContext, start, step, workflow

    topic = declare_topic("bench-tracing")

    @step()
    async def noop(ctx: StepContext, i: int) -> int:
        return i

    @workflow(name="bench.tracing")
    async def flow(ctx: WorkflowContext, i: int) -> int:
        return await noop(i)

    store = Store(f"sqlite+aiosqlite:///{db}")
    await store.migrate()
    from convergent import tracing

    began = time.perf_counter()
    with tracing.tracer.start_as_current_span("bench"):  # a recording parent when on
        for i in range(n):
            async with store.begin() as conn:
                await emit(conn, topic, f"k{i % 50}", "bench.tick", {"i": i})
                await start(conn, flow, i, key=f"r{i}")
    relay = Relay(store, EmbeddedTransport(store), batch_size=1000)
    while await relay.run_once():
        pass
    elapsed = time.perf_counter() - began
    await relay.release()
    await store.close()
    return n / elapsed


def child(mode: str, n: int) -> None:
    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class Drop(SpanExporter):
            def export(self, spans: object) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
    with tempfile.TemporaryDirectory() as tmp:
        rate = asyncio.run(workload(n, Path(tmp) / "bench.db"))
    print(json.dumps({"mode": mode, "rate": rate}))


def hook_cost_ns() -> float:
    """No SDK: what the hooks on one message's path cost (emit, transaction, run, relay)."""
    from opentelemetry import trace

    from convergent import tracing

    per_call = {
        "enabled": min(timeit.repeat(tracing.enabled, number=100_000, repeat=5)) / 100_000,
        "is_recording": min(
            timeit.repeat(lambda: trace.get_current_span().is_recording(), number=100_000, repeat=5)
        )
        / 100_000,
        "carrier": min(timeit.repeat(tracing.carrier, number=100_000, repeat=5)) / 100_000,
    }
    # per message: a transaction, an emit, a run insert and its execution, a relay publish
    return 1e9 * (3 * per_call["enabled"] + per_call["is_recording"] + per_call["carrier"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--child", choices=["off", "on"])
    args = parser.parse_args()
    n = 800 if args.quick else args.n
    if args.child:
        child(args.child, n)
        return
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for mode in ("off", "on", "off", "on"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--n", str(n)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        rates[mode].append(json.loads(out.splitlines()[-1])["rate"])
    off, on = max(rates["off"]), max(rates["on"])
    hooks = hook_cost_ns()
    per_message_ns = 1e9 / off
    print(f"messages (emit + run + publish), SQLite, n={n}")
    print(f"  no SDK (off): {off:,.0f}/s   rounds {', '.join(f'{r:,.0f}' for r in rates['off'])}")
    print(f"  SDK on      : {on:,.0f}/s   rounds {', '.join(f'{r:,.0f}' for r in rates['on'])}")
    print(f"  ratio on/off: {on / off:.2f}")
    print(
        f"  hooks with no SDK: {hooks:,.0f} ns per message = "
        f"{100 * hooks / per_message_ns:.3f}% of a message's {per_message_ns / 1000:,.0f} µs"
    )


if __name__ == "__main__":
    main()
