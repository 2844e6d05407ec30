"""The browser tests' workload: workflows a `convergent worker --import tests.browser.workload`
runs, and `seed` which starts runs, leaves dead letters and sends webhooks like a busy day would.

- ``payment``: reserves stock, then charges a card that keeps failing (retrying with backoff
  until an operator cancels; the cancel compensates the reservation).
- ``fulfilment``: a durable timer, waits for an ``approved`` signal, then completes.
"""

from __future__ import annotations

import uuid
from typing import Any

from convergent.errors import TransientError
from convergent.ids import uuid7
from convergent.messages import Message
from convergent.outbox import declare_topic
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import dead_letters
from convergent.webhooks import AllowList, create_endpoint, enqueue
from convergent.workflows import Saga, StepContext, WorkflowContext, send, step, submit, workflow

TOPIC = "console.orders"
declare_topic(TOPIC)

_CARD_RETRY = RetryPolicy(max_attempts=1000, initial_delay=0.5, max_delay=2.0, jitter=False)


@step
async def reserve_stock(ctx: StepContext, order_id: str) -> dict[str, Any]:
    return {"reservation": f"r-{order_id}"}


@step
async def release_stock(ctx: StepContext, order_id: str) -> dict[str, Any]:
    return {"released": f"r-{order_id}"}


@step(retry=_CARD_RETRY)
async def charge_card(ctx: StepContext, order_id: str) -> dict[str, Any]:
    raise TransientError("card processor answered 503 Service Unavailable")


@workflow(name="payment")
async def payment(ctx: WorkflowContext, order_id: str) -> str:
    async with Saga() as saga:
        await saga.step(reserve_stock, order_id, compensate=release_stock)
        await saga.step(charge_card, order_id)
    return "paid"


@step
async def pack(ctx: StepContext, order_id: str) -> str:
    return f"parcel-{order_id}"


@workflow(name="fulfilment")
async def fulfilment(ctx: WorkflowContext, order_id: str) -> str:
    await ctx.sleep(0.2)
    approval = await ctx.wait_for("approved", timeout=60)
    return await pack(order_id) + f" approved by {approval['by'] if approval else 'nobody'}"


async def seed(store: Store, receiver_url: str) -> dict[str, Any]:
    """Start runs and make one dead letter of each retryable kind and two webhook messages."""
    failing = [await submit(store, payment, f"o-{i}", key=f"pay-{1000 + i}") for i in range(3)]
    done = [await submit(store, fulfilment, f"f-{i}", key=f"ship-{i}") for i in range(5)]
    async with store.begin() as conn:
        for run_id in done:
            await send(conn, run_id, "approved", {"by": "warehouse"}, dedupe_key="approval")
    now = store.clock.now()
    letter = Message(topic=TOPIC, key="o-9", type="order.placed", data={"order": "o-9"})
    letter_id = uuid7()
    async with store.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=letter_id,
                source="outbox",
                source_ref=str(uuid7()),
                name=TOPIC,
                key="o-9",
                payload={"topic": TOPIC, "key": "o-9", "envelope": letter.to_envelope()},
                reason="broker refused the message 5 times: nats: timeout",
                attempts=5,
                status="dead",
                created_at=now,
            )
        )
        endpoint, _secret = await create_endpoint(
            conn,
            receiver_url,
            description="partner callbacks",
            allow=AllowList(hosts=frozenset({"127.0.0.1"})),
        )
        messages = [await enqueue(conn, "order.paid", {"order": f"o-{i}"}) for i in range(2)]
    return {
        "failing": failing,
        "done": done,
        "letter": letter_id,
        "endpoint": endpoint.id,
        "messages": messages,
    }


def as_ids(values: list[uuid.UUID]) -> list[str]:
    return [str(v) for v in values]
