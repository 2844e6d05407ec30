"""The transactional outbox, the relay, consumers and dead letters."""

from __future__ import annotations

from convergent.outbox.consumer import Consumer, consumer
from convergent.outbox.emit import emit
from convergent.outbox.readmodels import apply_entity
from convergent.outbox.relay import Relay
from convergent.topics import Topic, TopicKind, declare_topic

__all__ = [
    "Consumer",
    "Relay",
    "Topic",
    "TopicKind",
    "apply_entity",
    "consumer",
    "declare_topic",
    "emit",
]
