"""Outbox relay on PostgreSQL: throughput to embedded:// and NATS, commit→publish latency.

Baseline (same run): a bare pipelined ``js.publish_async`` loop with the same messages and headers.
Also printed: the NATS transport alone (its ``publish`` of the same batches, no database), the
ceiling for the relay, which adds reading and deleting the rows.

Consuming from NATS, same run: a bare fetch/ack loop on one pull consumer (no order under
failure) against the transport's ordered subscription (a pull consumer per partition with
``max_ack_pending=1``) and the full ``Consumer`` (inbox row and handler in a transaction).
Maintenance: one purge round deleting the embedded log the relay wrote, against the relay's rate.
Usage: python bench/outbox.py [--quick] [--events N] [--rate 1000] [--seconds S]
Needs PostgreSQL (CONVERGENT_BENCH_PG_URL, default postgres@127.0.0.1) and NATS (127.0.0.1:4222).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from convergent.maintenance import Retention, purge
from convergent.messages import Message
from convergent.outbox import Consumer, Relay, declare_topic, emit
from convergent.store import Store
from convergent.store.schema import outbox
from convergent.transports import Transport
from convergent.transports.embedded import EmbeddedTransport
from convergent.transports.nats import NatsTransport, stream_name, subject_for

PG = os.environ.get(
    "CONVERGENT_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
NATS = os.environ.get("CONVERGENT_BENCH_NATS_URL", "nats://127.0.0.1:4222")


async def admin(statements: list[str]) -> None:
    engine = create_async_engine(PG, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for s in statements:
                await conn.execute(sa.text(s))
    finally:
        await engine.dispose()


async def fill(store: Store, topic: str, n: int) -> None:
    per_tx = 1000
    for start in range(0, n, per_tx):
        async with store.begin() as conn:
            for i in range(start, min(n, start + per_tx)):
                await emit(conn, topic, f"k{i % 500}", "bench.tick", {"seq": i, "pad": "x" * 64})


async def relay_throughput(store: Store, transport: Transport, topic: str, n: int) -> float:
    await fill(store, topic, n)
    relay = Relay(store, transport, batch_size=2000)
    started = time.perf_counter()
    while True:
        await relay.run_once()
        async with store.read() as conn:
            if not await conn.scalar(sa.select(sa.func.count()).select_from(outbox)):
                break
    rate = n / (time.perf_counter() - started)
    await relay.release()
    return rate


async def bare_publish(transport: NatsTransport, topic: str, n: int) -> float:
    messages = [
        Message(topic, f"k{i % 500}", "bench.tick", {"seq": i, "pad": "x" * 64}) for i in range(n)
    ]
    js = transport.js
    started = time.perf_counter()
    for chunk in range(0, n, 2000):
        futures = []
        for m in messages[chunk : chunk + 2000]:
            headers = {**m.ce_headers(), "Nats-Msg-Id": m.id}
            futures.append(
                await js.publish_async(
                    subject_for(m.topic, m.key), m.body() or b"", headers=headers
                )
            )
        await asyncio.gather(*futures)
    return n / (time.perf_counter() - started)


async def transport_alone(transport: NatsTransport, topic: str, n: int) -> float:
    messages = [
        Message(topic, f"k{i % 500}", "bench.tick", {"seq": i, "pad": "x" * 64}) for i in range(n)
    ]
    started = time.perf_counter()
    for chunk in range(0, n, 2000):
        results = await transport.publish(messages[chunk : chunk + 2000])
        assert not any(results), results
    return n / (time.perf_counter() - started)


async def publish_for_consumers(transport: NatsTransport, topic: str, n: int) -> None:
    messages = [
        Message(topic, f"k{i % 500}", "bench.tick", {"seq": i, "pad": "x" * 64}) for i in range(n)
    ]
    for chunk in range(0, n, 2000):
        results = await transport.publish(messages[chunk : chunk + 2000])
        assert not any(results), results


async def bare_fetch_ack(transport: NatsTransport, topic: str, n: int) -> float:
    """One pull consumer on the whole stream, batches of 100, every message acked."""
    sub = await transport.js.pull_subscribe(
        f"{transport.subject_base(topic)}.>", durable="bare", stream=stream_name(topic)
    )
    got = 0
    started = time.perf_counter()
    while got < n:
        for msg in await sub.fetch(100, timeout=5):
            await msg.ack()
            got += 1
    rate = n / (time.perf_counter() - started)
    await sub.unsubscribe()
    return rate


async def ordered_fetch_ack(transport: NatsTransport, topic: str, n: int) -> float:
    """The transport's subscription (order per key under failure), no database."""
    sub = await transport.subscribe(declare_topic(topic), "ordered")
    got = 0
    started = time.perf_counter()
    while got < n:
        for d in await sub.fetch(100, 5.0):
            await d.ack()
            got += 1
    rate = n / (time.perf_counter() - started)
    await sub.close()
    return rate


async def full_consumer(store: Store, transport: NatsTransport, topic: str, n: int) -> float:
    """``Consumer``: inbox row and (empty) handler in one transaction per message, then ack."""

    async def handler(conn: object, message: Message) -> None:
        return None

    consumer = Consumer(store, transport, topic, "full", handler, batch_size=100)  # type: ignore[arg-type]
    started = time.perf_counter()
    while consumer.handled < n:
        await consumer.run_once(timeout=5.0)
    rate = n / (time.perf_counter() - started)
    await consumer.close()
    return rate


async def maintenance_round(store: Store, topic: str) -> tuple[int, float]:
    """One purge round with a retention that takes every entry the relay wrote to ``topic``."""
    keep = Retention(
        inbox=1e9, replies=1e9, runs=1e9, webhooks=1e9, log=1e9, log_topics={topic: 1e-6}
    )
    started = time.perf_counter()
    done = await purge(store, retention=keep)
    return done["log entries"], time.perf_counter() - started


class Timed(Transport):
    """Wraps a transport and notes when each message was acked."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.url = inner.url
        self.acked: dict[str, float] = {}

    async def start(self) -> None:
        await self.inner.start()

    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        results = await self.inner.publish(messages)
        wall = time.time()  # wall clock: the commit times come from another process
        for m, r in zip(messages, results, strict=True):
            if r is None:
                self.acked.setdefault(m.id, wall)
        return results

    async def subscribe(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise NotImplementedError


async def emit_at_rate(url: str, topic: str, rate: float, seconds: float, out: str) -> None:
    """Child process: commit one event per transaction at ``rate``/s; write id + commit time."""
    declare_topic(topic)
    store = Store(url)
    committed: dict[str, float] = {}
    slots = asyncio.Semaphore(32)  # concurrent writers, as request handlers would be
    in_flight: set[asyncio.Task[None]] = set()

    async def one(seq: int) -> None:
        async with slots, store.begin() as conn:
            m = await emit(conn, topic, f"k{seq % 500}", "bench.tick", {"seq": seq})
            # just before COMMIT: conservative (includes the commit itself), and not delayed by
            # this busy event loop resuming us after the commit
            committed[m.id] = time.time()

    started = time.perf_counter()
    sent = 0
    while time.perf_counter() - started < seconds:
        delay = started + sent / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(sent))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
    await asyncio.gather(*in_flight)
    achieved = sent / (time.perf_counter() - started)
    await store.close()
    lines = [f"{achieved}", *(f"{i} {t}" for i, t in committed.items())]
    await asyncio.to_thread(Path(out).write_text, "\n".join(lines) + "\n")


async def latency(
    store: Store, url: str, transport: Transport, topic: str, rate: float, seconds: float
) -> tuple[float, float, float]:
    """The relay here, the writers in a child process (as in production): commit → broker ack."""
    timed = Timed(transport)
    stop = asyncio.Event()
    relay = Relay(store, timed, poll_interval=1.0)
    task = asyncio.create_task(relay.run(stop))
    rss_before = psutil.Process().memory_info().rss
    out = f"/tmp/convergent-bench-{os.getpid()}.txt"
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--emit-child", url, topic, str(rate), str(seconds), out
    )
    await child.wait()
    first, *rest = (await asyncio.to_thread(Path(out).read_text)).splitlines()
    achieved = float(first)
    committed = {i: float(t) for i, t in (line.split() for line in rest)}
    await asyncio.to_thread(Path(out).unlink)
    deadline = time.perf_counter() + 10
    while len(timed.acked) < len(committed) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)  # a bench, not a test: a plain poll keeps Timed simple
    stop.set()
    await task
    rss_growth = (psutil.Process().memory_info().rss - rss_before) / 2**20
    lat = sorted((timed.acked[i] - t) * 1000 for i, t in committed.items() if i in timed.acked)
    if len(lat) < len(committed):
        print(f"  warning: {len(committed) - len(lat)} messages not published in time")
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"  offered {rate:.0f}/s, achieved {achieved:.0f}/s, relay RSS growth {rss_growth:+.1f} MiB"
    )
    return p50, p99, rss_growth


async def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--emit-child":
        url, topic, rate, seconds, out = sys.argv[2:]
        await emit_at_rate(url, topic, float(rate), float(seconds), out)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    n = args.events or (5_000 if args.quick else 50_000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    db = f"convergent_bench_{os.getpid()}_{secrets.token_hex(3)}"
    await admin([f'CREATE DATABASE "{db}"'])
    url = PG.rsplit("/", 1)[0] + f"/{db}"
    store = Store(url)
    nats_t = NatsTransport(NATS)
    run = secrets.token_hex(3)
    names = ("emb", "nats", "bare", "alone", "lat", "cons")
    topics = {name: declare_topic(f"bench{name}{run}") for name in names}
    try:
        await store.migrate()
        await nats_t.start()
        print(f"outbox bench on PostgreSQL, {n} events, 500 keys")
        emb = await relay_throughput(store, EmbeddedTransport(store), topics["emb"].name, n)
        print(f"relay to embedded: {emb:,.0f} events/s")
        purged, took = await maintenance_round(store, topics["emb"].name)
        print(
            f"maintenance: one round deleted {purged:,} log entries in {took:.2f} s "
            f"({purged / took:,.0f} rows/s), {took / (purged / emb) * 100:.0f}% of the time the "
            "relay took to write them"
        )
        await nats_t.ensure_topic(topics["bare"])
        bare = await bare_publish(nats_t, topics["bare"].name, n)
        alone = await transport_alone(nats_t, topics["alone"].name, n)
        print(f"nats transport alone (no database): {alone:,.0f} events/s")
        to_nats = await relay_throughput(store, nats_t, topics["nats"].name, n)
        p50, p99, _ = await latency(store, url, nats_t, topics["lat"].name, args.rate, seconds)
        print(
            f"commit→publish to nats at {args.rate:.0f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
            "(goal p99 ≤ 50 ms)"
        )
        print(
            f"ratio relay/bare publish: {to_nats / bare:.2f}, relay/transport alone: "
            f"{to_nats / alone:.2f} (goal: relay ≥ 20,000 events/s)"
        )
        print(f"relay to nats: {to_nats:,.0f} events/s (bare publish: {bare:,.0f} events/s)")
        m = min(n, 10_000)
        await publish_for_consumers(nats_t, topics["cons"].name, m)
        bare_in = await bare_fetch_ack(nats_t, topics["cons"].name, m)
        ordered_in = await ordered_fetch_ack(nats_t, topics["cons"].name, m)
        # a new group from the start of the stream; a commit per message: a sample is enough
        consumed = await full_consumer(store, nats_t, topics["cons"].name, min(m, 2000))
        print(
            f"consume from nats, {m} events: bare fetch/ack {bare_in:,.0f}/s, ordered "
            f"subscription {ordered_in:,.0f}/s ({ordered_in / bare_in:.2f}x); Consumer with inbox "
            f"({min(m, 2000)} events) {consumed:,.0f}/s ({consumed / bare_in:.2f}x)"
        )
    finally:
        for t in topics.values():
            await nats_t.delete_topic(t.name)
        await nats_t.close()
        await store.close()
        await admin(
            [
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'",
                f'DROP DATABASE IF EXISTS "{db}"',
            ]
        )


if __name__ == "__main__":
    asyncio.run(main())
