"""A tiny app for the observability tests: one topic and a consumer of it that gives up fast."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import Message
from convergent.outbox import consumer
from convergent.retry import RetryPolicy
from convergent.topics import declare_topic

PINGS = declare_topic("obs-pings")


@consumer(PINGS, "obs-test", retry=RetryPolicy(max_attempts=2, initial_delay=0.1, max_delay=0.2))
async def handle(conn: AsyncConnection, message: Message) -> None:
    if isinstance(message.data, dict) and message.data.get("poison"):
        raise ValueError("this ping is poison")
