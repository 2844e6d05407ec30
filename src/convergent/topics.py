"""Topics: a name, a kind and a payload type checked on every emit.

The payload type is anything pydantic validates: a model, a dataclass, a TypedDict, a list of
them... Emitting encodes it to JSON; `Topic.decode` reads a message's data back as that type.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from convergent.codec import Codec, encode_any
from convergent.errors import ConfigurationError, SchemaViolation, UnknownTopic, WorkflowError

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
    #: the payload's type: a pydantic model, a dataclass, ... (None: any JSON)
    schema: Any = None
    kind: TopicKind = TopicKind.EVENT
    partitions: int = 8  # broker partitions (embedded, Kafka)
    _codec: Codec | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.schema is not None:
            codec = Codec(self.schema)
            try:
                codec.adapter  # noqa: B018 - building it is the check
            except Exception as exc:
                raise ConfigurationError(
                    f"topic {self.name!r}: {self.schema!r} cannot be a payload type; use a "
                    "pydantic model, a dataclass or JSON types"
                ) from exc
            object.__setattr__(self, "_codec", codec)

    @property
    def schema_name(self) -> str | None:
        """The payload type's name (None when the topic takes any JSON)."""
        if self.schema is None:
            return None
        return str(getattr(self.schema, "__name__", None) or repr(self.schema))

    def validate(self, data: Any) -> Any:
        """Return ``data`` as JSON-ready values, or raise SchemaViolation."""
        if data is None:
            if self.kind is not TopicKind.ENTITY:
                raise SchemaViolation(f"topic {self.name!r}: only entity topics take tombstones")
            return None
        try:
            if self._codec is None:
                return encode_any(data)
            value = self._codec.adapter.validate_python(data)
            return self._codec.adapter.dump_python(value, mode="json")
        except ValidationError as exc:
            raise SchemaViolation(
                f"topic {self.name!r}: payload does not match {self.schema_name}: "
                f"{exc.errors(include_url=False)}",
            ) from None
        except WorkflowError as exc:
            raise SchemaViolation(f"topic {self.name!r}: {exc.message}") from None

    def decode(self, data: Any) -> Any:
        """A message's ``data`` as the topic's payload type (a tombstone stays None)."""
        if data is None or self._codec is None:
            return data
        try:
            return self._codec.adapter.validate_python(data)
        except ValidationError as exc:
            raise SchemaViolation(
                f"topic {self.name!r}: message data does not match {self.schema_name}: "
                f"{exc.errors(include_url=False)}",
            ) from None

    def json_schema(self, ref_template: str | None = None) -> dict[str, Any]:
        """The payload's JSON Schema (``{}`` when the topic takes any JSON)."""
        if self._codec is None:
            return {}
        if ref_template is None:
            return self._codec.adapter.json_schema()
        return self._codec.adapter.json_schema(ref_template=ref_template)


#: every declared topic by name
TOPICS: dict[str, Topic] = {}


def declare_topic(
    name: str,
    schema: Any = None,
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
