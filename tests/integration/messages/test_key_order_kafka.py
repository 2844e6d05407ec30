"""Kafka keeps order per key when one message of a batch fails and later ones would succeed."""

from __future__ import annotations

from typing import Any

import pytest

from convergent.errors import NotSent, TransportError
from convergent.messages import Message
from convergent.transports import Transport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.test_key_order import received

pytestmark = pytest.mark.parametrize("broker", ["kafka"], indirect=True)


async def test_kafka_holds_back_the_rest_of_a_key_behind_a_failed_message(
    transport: Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topic()
    batch = [Message(topic.name, "k", "t", {"seq": i}) for i in range(4)]
    batch.insert(2, Message(topic.name, "other", "t", {"seq": 0}))
    await transport.start()
    producer: Any = transport._producer  # type: ignore[attr-defined]
    real_send = producer.send
    refused = batch[1].id

    async def send(topic_name: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.get("headers") or [])
        if any(v == refused.encode() for v in headers.values()):
            raise RuntimeError("broker said no")
        return await real_send(topic_name, **kwargs)

    monkeypatch.setattr(producer, "send", send)
    results = await transport.publish(batch)
    assert results[0] is None  # k/0
    assert results[2] is None  # other/0
    assert type(results[1]) is TransportError
    assert all(isinstance(r, NotSent) for r in results[3:])  # k/2, k/3: never sent
    assert await received(transport, topic, 2) == {"k": [0], "other": [0]}
