"""The browser tests' workload: workflows a `convergent worker --import tests.browser.workload`
runs, and `seed` which starts runs, leaves dead letters and sends webhooks like a busy day would.

- ``payment``: reserves stock, then charges a card that keeps failing (retrying with backoff
  until an operator cancels; the cancel compensates the reservation).
- ``fulfilment``: a durable timer, waits for an ``approved`` signal, then completes.
- ``invoice``: its step fails until "the fix is deployed" (a file exists), so the run ends
  failed; an operator deploys the fix and resumes it.
- ``refund``: a step fails for good, the saga compensates, and the compensation fails until its
  fix is deployed: a workflow dead letter.
- consumer group ``ledger`` of ``console.invoices``: fails until its fix is deployed, so the first
  message of a key is dead-lettered and the next one parked behind it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import PermanentError, TransientError
from convergent.ids import uuid7
from convergent.messages import Message
from convergent.outbox import consumer, declare_topic, emit
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import dead_letters, queues
from convergent.webhooks import AllowList, create_endpoint, enqueue
from convergent.workflows import Saga, StepContext, WorkflowContext, send, step, submit, workflow
from convergent.workflows.schedules import Schedule, Ticks, sync_schedules

TOPIC = "console.orders"
declare_topic(TOPIC)
INVOICES = "console.invoices"
declare_topic(INVOICES)
RETURNS = "console.returns"
declare_topic(RETURNS)

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


_TWICE = RetryPolicy(max_attempts=2, initial_delay=0.1, max_delay=0.1, jitter=False)


#: the directory where the test "deploys a fix": a file ``fix-<name>`` (set for the worker too)
FIXES_ENV = "CONSOLE_WORKLOAD_FIXES"


def fixed(fix: str) -> bool:
    """Whether the operator has "deployed the fix" named ``fix``."""
    return fix_path(fix).exists()


def fix_path(fix: str) -> Path:
    return Path(os.environ[FIXES_ENV]) / f"fix-{fix}"


@step(retry=_TWICE)
async def issue_invoice(ctx: StepContext, order_id: str, fix: str) -> str:
    if not fixed(fix):
        raise TransientError("ledger answered 422: tax code missing")
    return f"invoice-{order_id}"


@workflow(name="invoice")
async def invoice(ctx: WorkflowContext, order_id: str, fix: str) -> str:
    await reserve_stock(order_id)
    return await issue_invoice(order_id, fix)


@step
async def hold_funds(ctx: StepContext, order_id: str, fix: str) -> str:
    return f"hold-{order_id}"


@step(retry=_TWICE)
async def release_funds(ctx: StepContext, order_id: str, fix: str) -> str:
    if not fixed(fix):
        raise TransientError("bank answered 500 while releasing the hold")
    return f"released-{order_id}"


@step
async def refund_card(ctx: StepContext, order_id: str) -> str:
    raise PermanentError("card expired")


@workflow(name="refund")
async def refund(ctx: WorkflowContext, order_id: str, fix: str) -> str:
    async with Saga() as saga:
        await saga.step(hold_funds, order_id, fix, compensate=release_funds)
        await saga.step(refund_card, order_id)
    return "refunded"


@consumer(INVOICES, "ledger", retry=_TWICE)
async def post_to_ledger(conn: AsyncConnection, message: Message) -> None:
    if not fixed(message.data["fix"]):
        raise RuntimeError("ledger rejected the posting: account frozen")


@step
async def pack(ctx: StepContext, order_id: str) -> str:
    return f"parcel-{order_id}"


@workflow(name="fulfilment")
async def fulfilment(ctx: WorkflowContext, order_id: str) -> str:
    await ctx.sleep(0.2)
    approval = await ctx.wait_for("approved", timeout=60)
    return await pack(order_id) + f" approved by {approval['by'] if approval else 'nobody'}"


async def seed(store: Store, receiver_url: str) -> dict[str, Any]:
    """Start runs and make one dead letter of each retryable kind and two webhook messages.

    The work that fails until its fix is deployed names its fix (`fixed`); the test deploys
    it with `fix_path(...).touch()`."""
    failing = [await submit(store, payment, f"o-{i}", key=f"pay-{1000 + i}") for i in range(3)]
    invoices = []
    for i in range(2):
        key = f"inv-{2000 + i}"
        invoices.append(await submit(store, invoice, f"i-{i}", key, key=key))
    refunds = [await submit(store, refund, "r-1", "refund-1", key="refund-1")]
    async with store.begin() as conn:
        for n in (1, 2):  # the first is dead-lettered, the second parked behind it
            await emit(
                conn,
                INVOICES,
                "acct-7",
                "invoice.issued",
                {"n": n, "fix": "ledger"},
            )
    done = [await submit(store, fulfilment, f"f-{i}", key=f"ship-{i}") for i in range(5)]
    async with store.begin() as conn:
        for run_id in done:
            await send(conn, run_id, "approved", {"by": "warehouse"}, dedupe_key="approval")
    now = store.clock.now()
    letter = Message(topic=TOPIC, key="o-9", type="order.placed", data={"order": "o-9"})
    letter_id = uuid7()
    async with store.begin() as conn:
        for n in (1, 2):  # retried together, by filter
            ret = f"ret-{n}"
            returned = Message(topic=RETURNS, key=ret, type="order.returned", data={})
            await conn.execute(
                dead_letters.insert().values(
                    id=uuid7(),
                    source="outbox",
                    source_ref=str(uuid7()),
                    name=RETURNS,
                    key=ret,
                    payload={"topic": RETURNS, "key": ret, "envelope": returned.to_envelope()},
                    reason="broker refused the return 5 times: nats: no responders",
                    attempts=5,
                    status="dead",
                    created_at=now,
                )
            )
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
        await conn.execute(
            queues.insert().values(
                name="payments", concurrency=4, rate_limit=10, rate_period=1.0, updated_at=now
            )
        )
    # written to the table only (schedule() would declare it for every test in this process)
    ticks = Ticks("0 3 * * *", None, "UTC")
    restock = Schedule("nightly-restock", fulfilment, ticks, "latest", ("restock",), None, 60, 100)
    await sync_schedules(store, [restock])
    return {
        "failing": failing,
        "invoices": invoices,
        "refunds": refunds,
        "done": done,
        "letter": letter_id,
        "endpoint": endpoint.id,
        "messages": messages,
    }


def as_ids(values: list[uuid.UUID]) -> list[str]:
    return [str(v) for v in values]
