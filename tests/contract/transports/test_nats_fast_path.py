"""The NATS fast path (our own PUB frames) can be switched off: nats-py's publish carries all."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from convergent.messages import Message
from convergent.transports.nats import NatsTransport
from tests.contract.transports.brokers import unique_topic
from tests.contract.transports.test_transport_contract import fetch_all


@pytest.mark.parametrize("fast", ["1", "0"])
async def test_publish_keeps_order_and_attributes_with_the_fast_path_on_and_off(
    nats_url: str, fast: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVERGENT_NATS_FAST_PATH", fast)
    transport = NatsTransport(nats_url)
    assert transport.fast_path is (fast == "1")
    try:
        topic = unique_topic()
        await transport.ensure_topic(topic)
        assert transport._nc is not None
        plain_publishes: list[str] = []
        publish = transport._nc.publish

        async def counting(subject: str, *args: Any, **kwargs: Any) -> None:
            if not subject.startswith("$"):  # acks of the fetch below go this way too
                plain_publishes.append(subject)
            await publish(subject, *args, **kwargs)

        monkeypatch.setattr(transport._nc, "publish", counting)
        sent = [
            Message(topic.name, f"k{i % 5}", "tick", {"seq": i}, headers={"x-n": str(i)})
            for i in range(40)
        ]
        assert await transport.publish(sent) == [None] * 40
        got = await fetch_all(transport, topic, f"g-{topic.name}", 40)
    finally:
        await transport.close()
    per_key: dict[str, list[int]] = defaultdict(list)
    for d in got:
        per_key[d.message.key].append(d.message.data["seq"])
        assert d.message.headers["x-n"] == str(d.message.data["seq"])
    assert sorted(i for seqs in per_key.values() for i in seqs) == list(range(40))
    assert all(seqs == sorted(seqs) for seqs in per_key.values())
    assert len(plain_publishes) == (0 if fast == "1" else 40)
