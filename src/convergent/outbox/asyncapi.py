"""An AsyncAPI 3.0 document of the declared topics (`convergent asyncapi`, the shop's
``/asyncapi.json``).

One channel per topic: its address is the NATS subject pattern ``<topic>.{key}``, its Kafka
binding names the Kafka topic (compacted for entity topics). The kind and the key's meaning ride in
``x-convergent-*`` extension fields. Each message carries the payload's JSON Schema (from the
topic's pydantic model; shared definitions go to ``components.schemas``) and the CloudEvents
binary-mode headers. A ``send`` operation per topic, a ``receive`` operation per declared consumer
group (the NATS durable / Kafka group id in the bindings).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from convergent.outbox.consumer import CONSUMERS, ConsumerSpec
from convergent.outbox.requests import CORRELATION_ID, REPLY_TO
from convergent.topics import TOPICS, Topic, TopicKind

__all__ = ["ASYNCAPI_VERSION", "KIND_EXTENSION", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
KIND_EXTENSION = "x-convergent-kind"
_KAFKA_BINDING = "0.5.0"
_NATS_BINDING = "0.1.0"
_REF = "#/components/schemas/{model}"

_KEY_MEANING = {
    TopicKind.ENTITY: "the entity's id: the latest message per key is its state, null deletes it",
    TopicKind.EVENT: "what the facts are about (order is kept per key)",
    TopicKind.REQUEST: "what the request is about (order is kept per key)",
    TopicKind.REPLY: "the key of the request it answers",
}

CLOUDEVENTS_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes in the binary content mode, plus trace context.",
    "required": ["ce-id", "ce-source", "ce-type", "ce-specversion", "ce-time"],
    "properties": {
        "ce-id": {"type": "string", "description": "Unique per message (UUIDv7); dedupe on it."},
        "ce-source": {"type": "string", "description": "The service that emitted it."},
        "ce-type": {"type": "string", "description": "What happened, e.g. order.paid."},
        "ce-specversion": {"type": "string", "const": "1.0"},
        "ce-subject": {"type": "string", "description": "The message key."},
        "ce-time": {"type": "string", "format": "date-time"},
        "content-type": {"type": "string", "const": "application/json"},
        "traceparent": {"type": "string", "description": "W3C trace context."},
    },
}


def _channel_id(name: str) -> str:
    return re.sub(r"[^\w.\-]", "_", name)


def _payload(topic: Topic, schemas: dict[str, Any]) -> dict[str, Any]:
    if topic.schema is None:
        body: dict[str, Any] = {"description": "any JSON value"}
    else:
        name = topic.schema_name or topic.name
        found = topic.json_schema(ref_template=_REF)
        schemas.update(found.pop("$defs", {}))
        schemas[name] = found
        body = {"$ref": _REF.format(model=name)}
    if topic.kind is TopicKind.ENTITY:
        return {"anyOf": [body, {"type": "null", "description": "a tombstone: deleted"}]}
    return body


def _headers(topic: Topic) -> dict[str, Any]:
    if topic.kind not in (TopicKind.REQUEST, TopicKind.REPLY):
        return CLOUDEVENTS_HEADERS
    extra = {CORRELATION_ID: {"type": "string", "description": "Pairs a reply with its request."}}
    if topic.kind is TopicKind.REQUEST:
        extra[REPLY_TO] = {"type": "string", "description": "The topic the reply goes to."}
    required = [*CLOUDEVENTS_HEADERS["required"], *extra]
    properties = {**CLOUDEVENTS_HEADERS["properties"], **extra}
    return {**CLOUDEVENTS_HEADERS, "required": required, "properties": properties}


def _message(topic: Topic, schemas: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": topic.name,
        "contentType": "application/json",
        "headers": _headers(topic),
        "payload": _payload(topic, schemas),
        "bindings": {
            "kafka": {"key": {"type": "string"}, "bindingVersion": _KAFKA_BINDING},
        },
    }
    if topic.kind in (TopicKind.REQUEST, TopicKind.REPLY):
        message["correlationId"] = {"location": f"$message.header#/{CORRELATION_ID}"}
    return message


def _channel(topic: Topic, message_id: str) -> dict[str, Any]:
    kafka: dict[str, Any] = {
        "topic": topic.name,
        "partitions": topic.partitions,
        "bindingVersion": _KAFKA_BINDING,
    }
    if topic.kind is TopicKind.ENTITY:
        kafka["topicConfiguration"] = {"cleanup.policy": ["compact"]}
    return {
        "address": f"{topic.name}.{{key}}",
        "title": topic.name,
        "description": f"The {topic.kind} topic {topic.name!r}: on NATS the subject "
        f"{topic.name}.<key>, on Kafka the topic {topic.name}, partitioned by key.",
        "parameters": {"key": {"description": f"The message key: {_KEY_MEANING[topic.kind]}."}},
        "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
        "bindings": {"kafka": kafka},
        KIND_EXTENSION: str(topic.kind),
        "x-convergent-key": _KEY_MEANING[topic.kind],
        "x-convergent-partitions": topic.partitions,
    }


def _receive(spec: ConsumerSpec, channel_id: str, message_id: str) -> dict[str, Any]:
    return {
        "action": "receive",
        "title": f"{spec.group} consumes {spec.topic.name}",
        "channel": {"$ref": f"#/channels/{channel_id}"},
        "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
        "bindings": {
            "kafka": {
                "groupId": {"type": "string", "enum": [spec.group]},
                "bindingVersion": _KAFKA_BINDING,
            },
            "nats": {"queue": spec.group, "bindingVersion": _NATS_BINDING},
        },
        "x-convergent-group": spec.group,
    }


def _server(broker_url: str) -> dict[str, Any]:
    parts = urlsplit(broker_url)
    host = parts.hostname or "localhost"
    return {
        "host": f"{host}:{parts.port}" if parts.port else host,
        "protocol": "kafka" if parts.scheme == "kafka" else "nats",
        "description": "The broker the relay publishes to.",
    }


def asyncapi_document(
    *,
    title: str,
    version: str = "0.0.0",
    description: str | None = None,
    topics: Iterable[Topic] | None = None,
    consumers: Iterable[ConsumerSpec] | None = None,
    broker_url: str | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``topics`` (default: every declared topic) and the
    ``consumers`` of them (default: every ``@consumer``); ``broker_url`` adds a server."""
    chosen = sorted(topics if topics is not None else TOPICS.values(), key=lambda t: t.name)
    specs = list(consumers if consumers is not None else CONSUMERS)
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in chosen:
        channel_id = _channel_id(topic.name)
        messages[channel_id] = _message(topic, schemas)
        channels[channel_id] = _channel(topic, channel_id)
        operations[f"send.{channel_id}"] = {
            "action": "send",
            "title": f"emit to {topic.name} (through the outbox)",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{channel_id}"}],
        }
        for spec in specs:
            if spec.topic.name == topic.name:
                operation = _receive(spec, channel_id, channel_id)
                operations[f"receive.{_channel_id(spec.group)}.{channel_id}"] = operation
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": info,
        "defaultContentType": "application/json",
    }
    if broker_url and urlsplit(broker_url).scheme in ("nats", "tls", "kafka"):
        document["servers"] = {"broker": _server(broker_url)}
    document["channels"] = channels
    document["operations"] = operations
    document["components"] = {"schemas": schemas, "messages": messages}
    return document
