"""The transport port: what the relay publishes through and consumers read from.

Delivery is at least once. ``publish`` returns one result per message (None = acked by the broker),
so a batch can partly fail. A subscription hands out deliveries in order per key; each must end
in ``ack()`` or ``nak(delay)``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from convergent.messages import Message
from convergent.topics import Topic

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["Delivery", "Subscription", "SubscriptionOptions", "Transport", "unreadable"]


class Delivery(abc.ABC):
    """One message handed to a consumer."""

    message: Message
    attempt: int  # 1 on first delivery
    order_key: str  # deliveries sharing it must be handled in order (key, subject, partition)
    #: why the message could not be read (then ``message`` is a stand-in: its id and key as far
    #: as known, no data) and what arrived, for the dead letter
    problem: str | None = None
    raw: dict[str, Any] | None = None

    @abc.abstractmethod
    async def ack(self) -> None:
        """Done: never deliver it to this group again."""

    @abc.abstractmethod
    async def nak(self, delay: float) -> None:
        """Deliver it again after ``delay`` seconds; later messages of its key wait."""

    async def working(self) -> None:
        """Still being handled (held through a database outage): do not redeliver it yet."""
        return


class Subscription(abc.ABC):
    """A consumer group's view of one topic."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; waits up to ``timeout`` s for the first one."""

    async def close(self) -> None:
        """Release what this member holds (leases, server-side state)."""
        return


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    max_deliver: int = 5  # the consumer dead-letters at this attempt; brokers keep one spare
    ack_wait: float = 30.0


class Transport(abc.ABC):
    """A broker behind one interface. Build with ``transport_from_url``."""

    url: str

    def appends_in(self, database: URL) -> bool:
        """True if ``append_in`` can publish within a transaction on ``database``."""
        return False

    async def append_in(self, conn: AsyncConnection, messages: Sequence[Message]) -> None:
        """Publish within the caller's transaction (where ``appends_in``): the messages are
        published if and only if it commits."""
        raise NotImplementedError(f"{type(self).__name__} publishes to a broker of its own")

    async def start(self) -> None:
        """Connect (idempotent)."""
        return

    async def close(self) -> None:
        """Disconnect."""
        return

    async def ensure_topic(self, topic: Topic) -> None:
        """Create the topic's broker-side resources if missing."""
        return

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        """Publish in order; one result per message, None when the broker acknowledged it.

        Order per key holds even when a message fails: a later message of the same key must not
        reach the broker before it. A transport that pipelines sends a key's next message only
        after the previous one was acked, and answers ``NotSent`` for those behind a failure."""

    @abc.abstractmethod
    async def subscribe(
        self, topic: Topic, group: str, options: SubscriptionOptions | None = None
    ) -> Subscription:
        """A durable subscription of ``group`` (created on first use, from the beginning)."""

    async def __aenter__(self) -> Transport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def unreadable(
    topic: str, key: str, message_id: str, where: str, exc: BaseException, raw: dict[str, Any]
) -> tuple[Message, str, dict[str, Any]]:
    """A stand-in message, the reason and the (bounded) raw input for a delivery that could not
    be read: the consumer dead-letters it instead of failing its loop."""
    reason = f"malformed message ({where}): {type(exc).__name__}: {exc}"
    for name in ("body", "envelope"):
        if isinstance(raw.get(name), str) and len(raw[name]) > _RAW_LIMIT:
            raw[name] = raw[name][:_RAW_LIMIT] + "..."
    return Message(topic, key, "", None, id=message_id), reason, raw


_RAW_LIMIT = 65536
