"""Webhook deliveries per second through the Dispatcher vs a bare httpx loop, same receiver.

Both sides sign every request and send with the same total concurrency to a receiver in its own
process. The dispatcher additionally claims, records each attempt and marks each delivery.
Goal: dispatcher >= 0.7 x the bare loop.

    python bench/webhooks.py [--quick] [--database-url postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import sqlalchemy as sa

from convergent.messages import json_dumps
from convergent.store import Store
from convergent.store.schema import webhook_deliveries
from convergent.webhooks import (
    AllowList,
    Dispatcher,
    WebhookSettings,
    create_endpoint,
    enqueue,
    new_secret,
    signature_header,
)

ENDPOINTS = 4
PER_ENDPOINT = 8


async def serve(port: int) -> None:
    """A minimal keep-alive HTTP/1.1 server answering 204 to everything."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                length = 0
                while (raw := await reader.readline()) not in (b"\r\n", b""):
                    if raw[:15].lower() == b"content-length:":
                        length = int(raw[15:])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                del line
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


async def bare_loop(base: str, total: int) -> float:
    secret = new_secret()
    payload = {"type": "order.paid", "timestamp": "2030-01-01T00:00:00+00:00", "data": {"n": 0}}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)
    limits = httpx.Limits(max_connections=ENDPOINTS * PER_ENDPOINT)
    async with httpx.AsyncClient(limits=limits, timeout=15) as client:

        async def worker(endpoint: int) -> None:
            while not queue.empty():
                n = queue.get_nowait()
                body = json_dumps({**payload, "data": {"n": n}})
                stamp = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": f"msg_{n}",
                    "webhook-timestamp": str(stamp),
                    "webhook-signature": signature_header([secret], f"msg_{n}", stamp, body),
                }
                response = await client.post(f"{base}/e{endpoint}", content=body, headers=headers)
                assert response.status_code == 204

        started = time.perf_counter()
        await asyncio.gather(*(worker(i % ENDPOINTS) for i in range(ENDPOINTS * PER_ENDPOINT)))
        return total / (time.perf_counter() - started)


async def dispatcher_run(base: str, total: int, database_url: str) -> float:
    async with Store(database_url) as store:
        await store.migrate()
        local = AllowList.parse(["127.0.0.1"])
        async with store.begin() as conn:
            await conn.execute(webhook_deliveries.delete())
            for i in range(ENDPOINTS):
                await create_endpoint(conn, f"{base}/e{i}", allow=local)
        messages = total // ENDPOINTS
        for start in range(0, messages, 500):
            async with store.begin() as conn:
                for n in range(start, min(messages, start + 500)):
                    await enqueue(conn, "order.paid", {"n": n})
        settings = WebhookSettings(
            allow=local, per_endpoint_concurrency=PER_ENDPOINT, batch_size=200, poll_interval=0.05
        )
        dispatcher = Dispatcher(store, settings)
        stop = asyncio.Event()
        pending = sa.select(sa.func.count()).where(webhook_deliveries.c.status == "pending")
        started = time.perf_counter()
        task = asyncio.create_task(dispatcher.run(stop))
        while True:
            await asyncio.sleep(0.05)
            async with store.read() as conn:
                if not (await conn.execute(pending)).scalar_one():
                    break
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        return messages * ENDPOINTS / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer deliveries (a smoke run)")
    parser.add_argument("--database-url", help="defaults to a temporary SQLite file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    total = 800 if args.quick else 4000
    port = free_port()
    receiver = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            url = args.database_url or f"sqlite+aiosqlite:///{os.path.join(tmp, 'bench.db')}"
            asyncio.run(bare_loop(base, min(total, 200)))  # warm up both sides
            bare = asyncio.run(bare_loop(base, total))
            ours = asyncio.run(dispatcher_run(base, total, url))
    finally:
        receiver.terminate()
        receiver.wait(10)
    print(f"deliveries: {total}, concurrency: {ENDPOINTS} endpoints x {PER_ENDPOINT}")
    print(f"bare httpx loop:  {bare:8.0f} deliveries/s")
    print(f"Dispatcher ({url.split(':')[0]}): {ours:8.0f} deliveries/s")
    print(f"ratio: {ours / bare:.2f} (goal >= 0.70)")


if __name__ == "__main__":
    main()
