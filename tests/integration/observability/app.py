"""A tiny app for the observability tests: a topic with a consumer that gives up fast, and a
consumer of the shop's order events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import Message
from convergent.outbox import consumer
from convergent.retry import RetryPolicy
from convergent.topics import declare_topic
from convergent.workflows import StepContext, WorkflowContext, start, step, workflow
from convergent_shop.events import orders_topic

PINGS = declare_topic("obs-pings")


@consumer(PINGS, "obs-test", retry=RetryPolicy(max_attempts=2, initial_delay=0.1, max_delay=0.2))
async def handle(conn: AsyncConnection, message: Message) -> None:
    if isinstance(message.data, dict) and message.data.get("poison"):
        raise ValueError("this ping is poison")


@step()
async def note(ctx: StepContext, message_id: str) -> str:
    return message_id


@workflow(name="obs.followup")
async def followup(ctx: WorkflowContext, message_id: str) -> str:
    return await note(message_id)


@consumer(orders_topic, "obs-orders")
async def watch_orders(conn: AsyncConnection, message: Message) -> None:
    """Consumes the shop's order events and starts a run for each: the handling and the run
    join the order's trace."""
    await start(conn, followup, message.id, key=message.id)
