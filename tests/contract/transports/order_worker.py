"""A consumer process for the order tests.

``python -m tests.contract.transports.order_worker BROKER_URL DATABASE_URL TOPIC PARTITIONS DIR``

Its handler records an effect per message; a message with ``fail`` fails once, one with ``die``
SIGKILLs the process inside the handler (before its transaction commits), once across all
workers (a marker file in DIR says it happened). SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.messages import Message
from convergent.outbox import Consumer, declare_topic
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.transports import transport_from_url
from tests.integration.messages.helpers import record_effect

GROUP = "order-workers"


def first_time(markers: Path, name: str) -> bool:
    """True for the one caller (of every process) that creates the marker."""
    try:
        fd = os.open(markers / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


async def main(
    broker_url: str, database_url: str, name: str, partitions: int, markers: Path
) -> None:
    topic = declare_topic(name, partitions=partitions)
    store = Store(database_url)
    transport = transport_from_url(broker_url, store)

    async def handler(conn: AsyncConnection, message: Message) -> None:
        if message.data.get("die") and first_time(markers, f"die-{message.id}"):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-handler: nothing of it committed
        if message.data.get("fail") and first_time(markers, f"fail-{message.id}"):
            raise RuntimeError("transient")
        await record_effect(conn, message)

    consumer = Consumer(
        store,
        transport,
        topic,
        GROUP,
        handler,
        retry=RetryPolicy(max_attempts=10, initial_delay=0.2, jitter=False),
        batch_size=20,
        fetch_timeout=0.3,
        ack_wait=3.0,  # a killed member's message comes back after this
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await transport.start()
        print("ready", flush=True)
        await consumer.run(stop)
    finally:
        await transport.close()
        await store.close()


if __name__ == "__main__":
    url, db, topic_name, parts, where = sys.argv[1:6]
    asyncio.run(main(url, db, topic_name, int(parts), Path(where)))
