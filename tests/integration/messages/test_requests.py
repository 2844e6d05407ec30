"""Request/reply: the answer is correlated, stored, and found after the requester restarts."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.messages import Message
from convergent.outbox import Consumer, Relay
from convergent.outbox.requests import await_reply, record_reply, send_reply, send_request
from convergent.store import Store
from convergent.transports.embedded import EmbeddedTransport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import drain_outbox


async def test_a_request_gets_its_correlated_reply(store: Store) -> None:
    requests, answers = unique_topic(kind="request"), unique_topic(kind="reply")
    transport = EmbeddedTransport(store)
    relay = Relay(store, transport)

    async def price(conn: AsyncConnection, message: Message) -> None:
        await send_reply(conn, message, "quote", {"sku": message.data["sku"], "price": 7})

    pricer = Consumer(store, transport, requests, "pricer", price)
    inbox = Consumer(store, transport, answers, "requester", record_reply)
    async with store.begin() as conn:
        correlation_id = await send_request(
            conn, requests, "sku-1", "quote.requested", {"sku": "sku-1"}, reply_to=answers
        )
    try:
        await drain_outbox(relay)
        await pricer.run_once(timeout=0.5)
        await drain_outbox(relay)
        await inbox.run_once(timeout=0.5)
    finally:
        await pricer.close()
        await inbox.close()
    restarted = Store(store.url.render_as_string(hide_password=False))  # as after a restart
    try:
        reply = await await_reply(restarted, correlation_id, timeout=5)
    finally:
        await restarted.close()
    assert reply.data == {"sku": "sku-1", "price": 7}
    assert reply.headers["correlationid"] == correlation_id


async def test_waiting_for_a_reply_that_never_comes_times_out(store: Store) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(await_reply(store, "nobody", timeout=0.2), 5)
