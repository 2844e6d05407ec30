"""Topics: a name, a kind and a payload schema (a pydantic model) checked on every emit."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from convergent.errors import SchemaViolation, UnknownTopic

__all__ = ["TOPICS", "Topic", "TopicKind", "declare_topic", "get_topic", "partition_for"]


class TopicKind(StrEnum):
    ENTITY = "entity"  # key = entity id, payload = latest state, None = tombstone (delete)
    EVENT = "event"  # facts, never changed
    REQUEST = "request"  # carries correlationid and replyto headers
    REPLY = "reply"


def partition_for(key: str, partitions: int) -> int:
    """A stable hash (same in every process and language): crc32 of the UTF-8 key."""
    return zlib.crc32(key.encode()) % partitions


@dataclass(frozen=True, slots=True)
class Topic:
    """A declared topic. ``schema`` None accepts any JSON payload."""

    name: str
    schema: type[BaseModel] | None = None
    kind: TopicKind = TopicKind.EVENT
    partitions: int = 8  # broker partitions (embedded, Kafka)

    def validate(self, data: Any) -> Any:
        """Return ``data`` as JSON-ready values, or raise SchemaViolation."""
        if data is None:
            if self.kind is not TopicKind.ENTITY:
                raise SchemaViolation(f"topic {self.name!r}: only entity topics take tombstones")
            return None
        if self.schema is None:
            return data
        try:
            model = data if isinstance(data, self.schema) else self.schema.model_validate(data)
        except ValidationError as exc:
            raise SchemaViolation(
                f"topic {self.name!r}: payload does not match {self.schema.__name__}: "
                f"{exc.errors(include_url=False)}",
            ) from None
        return model.model_dump(mode="json")

    def json_schema(self) -> dict[str, Any]:
        """The payload's JSON Schema (``{}`` when the topic takes any JSON)."""
        if self.schema is None:
            return {}
        return self.schema.model_json_schema()


#: every declared topic by name
TOPICS: dict[str, Topic] = {}


def declare_topic(
    name: str,
    schema: type[BaseModel] | None = None,
    *,
    kind: TopicKind | str = TopicKind.EVENT,
    partitions: int = 8,
) -> Topic:
    """Declare (or re-declare identically) a topic and return it."""
    topic = Topic(name, schema, TopicKind(kind), partitions)
    existing = TOPICS.get(name)
    if existing is not None and existing != topic:
        raise ValueError(f"topic {name!r} is already declared differently")
    TOPICS[name] = topic
    return topic


def get_topic(topic: Topic | str) -> Topic:
    if isinstance(topic, Topic):
        return topic
    try:
        return TOPICS[topic]
    except KeyError:
        raise UnknownTopic(f"no topic {topic!r} is declared; call declare_topic() first") from None
