"""Order per key when one message of a pipelined batch fails and later ones would succeed."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa
from nats.aio.client import Client

from convergent.errors import NotSent, TransportError
from convergent.messages import Message
from convergent.outbox import Relay, emit
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import outbox
from convergent.topics import Topic
from convergent.transports import Transport
from convergent.transports import nats as nats_transport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import drain_outbox

pytestmark = pytest.mark.parametrize("broker", ["nats-sqlite", "nats-postgres"], indirect=True)


def lose_once(monkeypatch: pytest.MonkeyPatch, message_ids: set[str]) -> list[str]:
    """Make NATS refuse each of ``message_ids`` on its first send (it goes to a subject no
    stream captures, so the ack is an error and nothing is stored). Returns the ids lost."""
    lost: list[str] = []
    real_frame, real_publish = nats_transport._frame, Client.publish

    def lose(subject: str, headers: dict[str, str] | None) -> str:
        msg_id = (headers or {}).get("Nats-Msg-Id")
        if msg_id in message_ids and msg_id not in lost:
            lost.append(msg_id)
            return f"nowhere.{msg_id}"
        return subject

    def frame(subject: str, reply: str, headers: dict[str, str], *args: Any) -> bytes | None:
        return real_frame(lose(subject, headers), reply, headers, *args)

    async def publish(
        nc: Client,
        subject: str,
        payload: bytes = b"",
        reply: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        await real_publish(nc, lose(subject, headers), payload, reply, headers)

    monkeypatch.setattr(nats_transport, "_frame", frame)  # the batched path
    monkeypatch.setattr(Client, "publish", publish)  # the client's own, for the rest
    return lost


async def received(transport: Transport, topic: Topic, count: int) -> dict[str, list[int]]:
    """Every message on the topic, in broker order, as seq numbers per key."""
    sub = await transport.subscribe(topic, f"g-{topic.name}")
    seqs: dict[str, list[int]] = defaultdict(list)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while sum(map(len, seqs.values())) < count:
            for d in await sub.fetch(50, timeout=0.5):
                seqs[d.message.key].append(d.message.data["seq"])
                await d.ack()
            assert asyncio.get_running_loop().time() < deadline, f"got only {dict(seqs)}"
        assert await sub.fetch(50, timeout=0.2) == []  # nothing more (no duplicate either)
    finally:
        await sub.close()
    return dict(seqs)


async def test_a_failed_message_holds_back_the_rest_of_its_key_in_the_batch(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topic()
    batch = [Message(topic.name, "k", "t", {"seq": i}) for i in range(4)]
    batch.insert(2, Message(topic.name, "other", "t", {"seq": 0}))
    lose_once(monkeypatch, {batch[1].id})
    results = await transport.publish(batch)
    assert results[0] is None  # k/0
    assert results[2] is None  # other/0
    assert type(results[1]) is TransportError
    assert "no stream" in str(results[1])
    assert all(isinstance(r, NotSent) for r in results[3:])  # k/2, k/3: never sent
    assert await received(transport, topic, 2) == {"k": [0], "other": [0]}


@pytest.mark.parametrize("batch_size", [1000, 2])  # 2: the rest of the key is in later batches
async def test_the_relay_keeps_order_per_key_when_a_message_in_the_middle_fails(
    broker_store: Store, transport: Transport, batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topic()
    async with broker_store.begin() as conn:
        ids = [(await emit(conn, topic.name, "k", "t", {"seq": i})).id for i in range(6)]
        for i in range(3):
            await emit(conn, topic.name, "other", "t", {"seq": i})
    lost = lose_once(monkeypatch, {ids[1]})
    # a retry far off: with full jitter it could be due again within this very pass
    later = RetryPolicy(initial_delay=60, jitter=False)
    relay = Relay(broker_store, transport, batch_size=batch_size, retry=later)
    await relay.run_once()
    assert lost == [ids[1]]
    async with broker_store.read() as conn:
        waiting = (await conn.execute(sa.select(outbox).order_by(outbox.c.id))).all()
    # k/1 failed once; those behind it were not sent, so they are no attempt of theirs
    assert [(r.envelope["data"]["seq"], r.attempts) for r in waiting] == [
        (1, 1),
        (2, 0),
        (3, 0),
        (4, 0),
        (5, 0),
    ]
    async with broker_store.begin() as conn:  # the retry is due now
        await conn.execute(sa.update(outbox).values(next_attempt_at=None))
    await drain_outbox(relay)
    assert await received(transport, topic, 9) == {"k": [0, 1, 2, 3, 4, 5], "other": [0, 1, 2]}
