"""A delivery held through a database outage is not handed out again by a broker that redelivers
after an ack wait (NATS); Kafka hands a partition to one member and never redelivers meanwhile.
(The embedded log has no ack wait: a member settles each delivery before it fetches again.)"""

from __future__ import annotations

import asyncio

import pytest

from convergent.messages import Message
from convergent.transports import Delivery, Transport
from tests.contract.transports.brokers import unique_topic

pytestmark = pytest.mark.parametrize("broker", ["nats-sqlite", "kafka"], indirect=True)


async def test_a_delivery_still_being_worked_on_is_not_redelivered_past_its_ack_wait(
    transport: Transport,
) -> None:
    """A consumer holding a message through a database outage says so; the broker waits."""
    from convergent.transports.base import SubscriptionOptions

    topic = unique_topic()
    await transport.ensure_topic(topic)
    await transport.publish([Message(topic.name, "k", "t", {"x": 1})])
    sub = await transport.subscribe(topic, f"g-{topic.name}", SubscriptionOptions(ack_wait=1.0))
    try:
        held: list[Delivery] = []
        while not held:
            held = await sub.fetch(10, 1.0)
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5  # well past the ack wait
        while loop.time() < until:
            await held[0].working()
            assert await sub.fetch(10, 0.4) == []  # not handed out again meanwhile
        await held[0].ack()
    finally:
        await sub.close()
