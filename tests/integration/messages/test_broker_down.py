"""A broker that is down costs retries, never rows."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from convergent.drill import free_port
from convergent.outbox import Relay, emit
from convergent.store import Store
from convergent.store.schema import outbox
from convergent.transports import Transport
from convergent.transports.kafka import KafkaTransport
from convergent.transports.nats import NatsTransport
from tests.contract.transports.brokers import unique_topic


@pytest.mark.parametrize("scheme", ["nats", "kafka"])
async def test_an_unreachable_broker_leaves_the_row_waiting_for_a_retry(
    store: Store, scheme: str
) -> None:
    topic = unique_topic()
    async with store.begin() as conn:
        await emit(conn, topic, "k", "tick", {"seq": 1})
    url = f"{scheme}://127.0.0.1:{free_port()}"  # nobody listens there
    transport: Transport = (
        NatsTransport(url, connect_timeout=1.0) if scheme == "nats" else KafkaTransport(url)
    )
    try:
        assert await asyncio.wait_for(Relay(store, transport).run_once(), 30) == 1
    finally:
        await transport.close()
    async with store.read() as conn:
        row = (await conn.execute(sa.select(outbox))).one()
    assert row.attempts == 1
    assert row.next_attempt_at is not None
    assert "cannot reach" in row.last_error
