"""Shared brokers: a name prefix per deployment, stream limits, Kafka entity-topic compaction."""

from __future__ import annotations

import pytest

from convergent.ids import new_id
from convergent.messages import Message
from convergent.store import Store
from convergent.transports import Transport, transport_from_url
from tests.contract.transports.brokers import unique_topic
from tests.contract.transports.test_transport_contract import fetch_all


def with_options(url: str, options: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{options}"


@pytest.mark.parametrize("broker", ["nats-sqlite", "kafka"], indirect=True)
async def test_two_deployments_on_one_broker_never_share_a_topic(
    broker: tuple[str, str], broker_store: Store
) -> None:
    topic = unique_topic()
    run = new_id()[-6:]
    staging = transport_from_url(with_options(broker[0], f"prefix=staging{run}"), broker_store)
    prod = transport_from_url(with_options(broker[0], f"prefix=prod{run}"), broker_store)
    try:
        await staging.publish([Message(topic.name, "k", "t", {"env": "staging"})])
        await prod.publish([Message(topic.name, "k", "t", {"env": "prod", "n": n}) for n in (1, 2)])
        got = await fetch_all(prod, topic, f"g-{topic.name}", 2)
        assert sorted(d.message.data["n"] for d in got) == [1, 2]
        assert {d.message.topic for d in got} == {topic.name}  # the prefix stays on the broker
        [only] = await fetch_all(staging, topic, f"g-{topic.name}", 1)
        assert only.message.data == {"env": "staging"}
    finally:
        await staging.close()
        await prod.close()


@pytest.mark.parametrize("broker", ["nats-sqlite"], indirect=True)
async def test_nats_streams_get_the_urls_limits_and_prefix(
    broker: tuple[str, str], broker_store: Store
) -> None:
    from convergent.transports.nats import NatsTransport, stream_name

    topic = unique_topic()
    prefix = f"env{new_id()[-6:]}"
    url = with_options(broker[0], f"prefix={prefix}&max_age=3600&max_bytes=10000000")
    transport = transport_from_url(url, broker_store)
    assert isinstance(transport, NatsTransport)
    try:
        await transport.ensure_topic(topic)
        info = await transport.js.stream_info(stream_name(topic.name, prefix))
        assert (info.config.max_age, info.config.max_bytes) == (3600.0, 10_000_000)
        assert info.config.subjects == [f"{prefix}.{topic.name}.>"]
        assert info.config.num_replicas == 1
    finally:
        await transport.delete_topic(topic.name)
        await transport.close()


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
async def test_kafka_entity_topics_are_created_compacted(transport: Transport) -> None:
    """What tansu lets us verify: the topic is created with cleanup.policy=compact. Whether the
    broker then compacts is the broker's job (tansu 0.6 keeps every record; docs/messages.md)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    entity = unique_topic(kind="entity")
    events = unique_topic()
    await transport.ensure_topic(entity)
    await transport.ensure_topic(events)
    admin = AIOKafkaAdminClient(**transport.connection)  # type: ignore[attr-defined]
    await admin.start()
    try:
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in (entity, events)]
        )
    finally:
        await admin.close()
    policies = {}
    for answer in answers:
        for resource in answer.resources:
            _, _, _, name, entries = resource[:5]
            values = {e[0]: e[1] for e in entries}
            policies[name] = values.get("cleanup.policy")
    assert policies[entity.name] == "compact"
    assert policies[events.name] in (None, "delete")
