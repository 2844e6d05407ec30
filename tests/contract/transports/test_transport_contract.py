"""One contract, every transport: embedded (SQLite, PostgreSQL), NATS JetStream, Kafka (tansu)."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from convergent.messages import Message
from convergent.topics import Topic
from convergent.transports import Delivery, Transport
from tests.contract.transports.brokers import unique_topic


async def fetch_all(transport: Transport, topic: Topic, group: str, want: int) -> list[Delivery]:
    sub = await transport.subscribe(topic, group)
    got: list[Delivery] = []
    deadline = asyncio.get_running_loop().time() + 15
    try:
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            batch = await sub.fetch(100, 0.5)
            for d in batch:
                await d.ack()
            got.extend(batch)
    finally:
        await sub.close()
    return got


async def test_every_acked_publish_is_delivered_with_its_attributes(transport: Transport) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    sent = Message(
        topic.name,
        "order.1/a b",
        "order.placed",
        {"n": 1, "s": "é"},
        source="/shop/orders",
        headers={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )
    assert await transport.publish([sent]) == [None]
    [got] = await fetch_all(transport, topic, f"g-{topic.name}", 1)
    m = got.message
    assert (m.id, m.key, m.type, m.source, m.data) == (
        sent.id,
        sent.key,
        sent.type,
        sent.source,
        sent.data,
    )
    assert m.time == sent.time
    assert m.headers["traceparent"] == sent.headers["traceparent"]
    assert got.attempt == 1


async def test_order_per_key_is_kept(transport: Transport) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    sent = [Message(topic.name, f"k{i % 5}", "tick", {"seq": i}) for i in range(60)]
    assert await transport.publish(sent) == [None] * 60
    got = await fetch_all(transport, topic, f"g-{topic.name}", 60)
    per_key: dict[str, list[int]] = defaultdict(list)
    for d in got:
        per_key[d.message.key].append(d.message.data["seq"])
    assert len(got) == 60
    assert all(seqs == sorted(seqs) for seqs in per_key.values())


async def test_a_tombstone_arrives_as_none(transport: Transport) -> None:
    topic = unique_topic(kind="entity")
    await transport.ensure_topic(topic)
    await transport.publish([Message(topic.name, "c1", "customer.deleted", None)])
    [got] = await fetch_all(transport, topic, f"g-{topic.name}", 1)
    assert got.message.is_tombstone


async def test_a_nakked_message_comes_back_with_the_next_attempt_number(
    transport: Transport,
) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await transport.publish([Message(topic.name, "k", "t", {"x": 1})])
    sub = await transport.subscribe(topic, f"g-{topic.name}")
    try:
        first: list[Delivery] = []
        while not first:
            first = await sub.fetch(10, 1.0)
        await first[0].nak(0.0)
        again: list[Delivery] = []
        deadline = asyncio.get_running_loop().time() + 10
        while not again and asyncio.get_running_loop().time() < deadline:
            again = await sub.fetch(10, 0.5)
        assert [d.message.id for d in again] == [first[0].message.id]
        assert again[0].attempt == 2
        await again[0].ack()
    finally:
        await sub.close()


async def test_acked_messages_are_not_redelivered_to_the_group_but_reach_other_groups(
    transport: Transport,
) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await transport.publish([Message(topic.name, "k", "t", {"i": i}) for i in range(3)])
    assert len(await fetch_all(transport, topic, f"billing-{topic.name}", 3)) == 3
    sub = await transport.subscribe(topic, f"billing-{topic.name}")
    try:
        assert await sub.fetch(10, 0.5) == []
    finally:
        await sub.close()
    assert len(await fetch_all(transport, topic, f"analytics-{topic.name}", 3)) == 3


async def test_group_and_topic_names_with_dots_work(transport: Transport) -> None:
    base = unique_topic()
    topic = Topic(f"shop.{base.name}", base.schema, base.kind, base.partitions)
    await transport.ensure_topic(topic)
    assert await transport.publish([Message(topic.name, "c1", "changed", {"v": 1})]) == [None]
    [got] = await fetch_all(transport, topic, f"billing.accounts.{base.name}", 1)
    assert got.message.data == {"v": 1}
