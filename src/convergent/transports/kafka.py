"""``kafka://host:9092``: Apache Kafka or a Kafka-protocol broker (the only ``aiokafka`` import).

The message key picks the partition (murmur2, Kafka's default), so order per key holds; entity
topics are created with ``cleanup.policy=compact`` and a tombstone is a null value. Attributes
travel as ``ce_`` headers (the CloudEvents Kafka binding). Consumers commit offsets explicitly,
after the handler's transaction committed (batched into the next fetch). The idempotent producer
is off (tansu, our test broker, lacks it); duplicates are dropped by the consumer's inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from convergent.errors import ConfigurationError, MissingExtra

try:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
except ImportError as exc:
    raise MissingExtra("kafka", "the Kafka transport") from exc
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import OffsetAndMetadata

from convergent.errors import NotSent, TransportError
from convergent.messages import Message
from convergent.topics import TOPICS, Topic, TopicKind
from convergent.transports._options import SECURITY_OPTIONS, broker_security, prefixed
from convergent.transports.base import (
    Delivery,
    Subscription,
    SubscriptionOptions,
    Transport,
    unreadable,
)

__all__ = ["KafkaTransport"]

_PREFIX = "ce_"


_SASL = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaTransport(Transport):
    def __init__(self, url: str, **consumer_options: Any) -> None:
        """``kafka://[user:password@]host:9092[,host2:9092]?prefix=staging&tls=1&...``.

        Options: ``prefix`` (topic names become ``<prefix>.<topic>``), ``tls``/``tls_ca``/
        ``tls_cert``/``tls_key`` (TLS), ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512;
        SASL is on when a user is given, in the URL or ``CONVERGENT_BROKER_USERNAME``); any other
        option is a consumer setting in integers, e.g. ``session_timeout_ms=2000``."""
        self.url = url
        parsed = urlsplit(url)
        query = dict(parse_qsl(parsed.query))
        strings = {k: query.pop(k) for k in [*SECURITY_OPTIONS, "sasl_mechanism"] if k in query}
        try:
            numbers = {k: int(v) for k, v in query.items()}
        except ValueError:
            raise ConfigurationError(
                f"bad Kafka URL {url!r}: options are prefix, tls, tls_ca, tls_cert, tls_key, "
                "sasl_mechanism, or consumer settings in integers (session_timeout_ms=2000)"
            ) from None
        self.consumer_options = {**numbers, **consumer_options}
        self.bootstrap = parsed.netloc.rpartition("@")[2]
        self.security = broker_security(
            strings,
            username=unquote(parsed.username or ""),
            password=unquote(parsed.password or ""),
        )
        self.prefix = self.security.prefix
        mechanism = strings.get("sasl_mechanism", "PLAIN").upper()
        if mechanism not in _SASL:
            raise ConfigurationError(
                f"bad Kafka URL {url!r}: sasl_mechanism is one of {', '.join(_SASL)}"
            )
        self.connection = self._connection(mechanism)
        self._producer: AIOKafkaProducer | None = None
        self._topics: set[str] = set()

    def _connection(self, mechanism: str) -> dict[str, Any]:
        """security_protocol, TLS context and SASL for every client (producer, consumer, admin)."""
        security = self.security
        context = security.ssl_context()
        sasl = bool(security.username)
        protocol = {
            (False, False): "PLAINTEXT",
            (True, False): "SSL",
            (False, True): "SASL_PLAINTEXT",
            (True, True): "SASL_SSL",
        }[(context is not None, sasl)]
        out: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": protocol}
        if context is not None:
            out["ssl_context"] = context
        if sasl:
            out["sasl_mechanism"] = mechanism
            out["sasl_plain_username"] = security.username
            out["sasl_plain_password"] = security.password
        return out

    def topic_name(self, topic: str) -> str:
        """The Kafka topic: ``<topic>``, or ``<prefix>.<topic>`` with a name prefix."""
        return prefixed(self.prefix, topic)

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **self.connection, acks="all", enable_idempotence=False, linger_ms=2
            )
            try:
                await producer.start()
            except Exception as exc:
                await producer.stop()
                raise TransportError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
            self._producer = producer

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def ensure_topic(self, topic: Topic) -> None:
        if topic.name in self._topics:
            return
        admin = AIOKafkaAdminClient(**self.connection)
        await admin.start()
        try:
            configs = {"cleanup.policy": "compact"} if topic.kind is TopicKind.ENTITY else {}
            new = NewTopic(self.topic_name(topic.name), topic.partitions, 1, topic_configs=configs)
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([new])
        finally:
            await admin.close()
        self._topics.add(topic.name)

    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        """Keys are sent side by side (the producer batches them); within a key one message is
        in flight at a time, so a failed one is never overtaken by the next of its key: those
        behind it answer ``NotSent`` and stay in the outbox."""
        try:
            await self.start()
            for name in {m.topic for m in messages}:
                await self.ensure_topic(TOPICS.get(name) or Topic(name))
        except Exception as exc:
            return [TransportError(f"Kafka publish failed: {exc}")] * len(messages)
        producer = self._producer
        assert producer is not None
        results: list[BaseException | None] = [None] * len(messages)
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, m in enumerate(messages):
            by_key.setdefault((m.topic, m.key), []).append(i)

        async def send_key(indexes: list[int]) -> None:
            for n, i in enumerate(indexes):
                m = messages[i]
                headers = [
                    (k.replace("ce-", _PREFIX, 1), v.encode()) for k, v in m.ce_headers().items()
                ]
                try:
                    sent = await producer.send(
                        self.topic_name(m.topic),
                        value=m.body(),
                        key=m.key.encode(),
                        headers=headers,
                    )
                    await sent
                except Exception as exc:
                    results[i] = TransportError(f"Kafka publish failed: {exc}")
                    for j in indexes[n + 1 :]:
                        results[j] = NotSent(f"held back behind {m.id}, which failed")
                    return

        await asyncio.gather(*(send_key(indexes) for indexes in by_key.values()))
        return results

    async def subscribe(
        self, topic: Topic, group: str, options: SubscriptionOptions | None = None
    ) -> Subscription:
        await self.ensure_topic(topic)
        consumer = AIOKafkaConsumer(
            self.topic_name(topic.name),
            **self.connection,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **{"session_timeout_ms": 10000, "heartbeat_interval_ms": 1000, **self.consumer_options},
        )
        await consumer.start()
        return KafkaSubscription(topic, consumer)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


class KafkaDelivery(Delivery):
    def __init__(self, sub: KafkaSubscription, record: ConsumerRecord[Any, Any], attempt: int):
        self.sub = sub
        self.record = record
        self.tp = TopicPartition(record.topic, record.partition)
        try:
            headers = {k.replace(_PREFIX, "ce-", 1): v.decode() for k, v in record.headers}
            self.message = Message.from_ce_headers(sub.topic.name, headers, record.value)
        except Exception as exc:  # not ours, or damaged: dead-lettered by the consumer
            where = f"Kafka {record.topic}/{record.partition}@{record.offset}"
            self.message, self.problem, self.raw = unreadable(
                sub.topic.name,
                _text(record.key),
                f"kafka-{record.topic}-{record.partition}-{record.offset}",
                where,
                exc,
                {
                    "headers": {k: _text(v) for k, v in record.headers},
                    "body": _text(record.value),
                },
            )
        self.attempt = attempt
        self.order_key = f"{record.topic}/{record.partition}"

    async def ack(self) -> None:
        # committed with the next fetch (or close): a crash before that redelivers, and the
        # consumer's inbox drops the duplicate
        self.sub.acked[self.tp] = OffsetAndMetadata(self.record.offset + 1, "")
        self.sub.attempts.pop((self.tp, self.record.offset), None)

    async def nak(self, delay: float) -> None:
        await self.sub.retry_later(self, delay)


class KafkaSubscription(Subscription):
    def __init__(self, topic: Topic, consumer: AIOKafkaConsumer) -> None:
        self.topic = topic
        self.consumer = consumer
        self.attempts: dict[tuple[TopicPartition, int], int] = {}
        self.paused: dict[TopicPartition, float] = {}  # partition -> monotonic resume time
        self.acked: dict[TopicPartition, OffsetAndMetadata] = {}

    async def commit(self) -> None:
        if self.acked:
            offsets, self.acked = self.acked, {}
            await self.consumer.commit(offsets)

    async def retry_later(self, d: KafkaDelivery, delay: float) -> None:
        """Rewind the partition to the message and pause it for ``delay`` seconds."""
        if d.tp in self.paused:
            return  # an earlier message of this partition already rewound it
        key = (d.tp, d.record.offset)
        self.attempts[key] = self.attempts.get(key, 1) + 1
        self.consumer.seek(d.tp, d.record.offset)
        self.consumer.pause(d.tp)
        self.paused[d.tp] = time.monotonic() + delay

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        await self.commit()
        now = time.monotonic()
        for tp, until in list(self.paused.items()):
            if until <= now:
                self.consumer.resume(tp)
                del self.paused[tp]
        batches = await self.consumer.getmany(
            timeout_ms=int(timeout * 1000), max_records=max_messages
        )
        out: list[Delivery] = []
        for records in batches.values():
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                out.append(KafkaDelivery(self, r, self.attempts.get((tp, r.offset), 1)))
        return out

    async def close(self) -> None:
        try:
            await self.commit()
        finally:
            await self.consumer.stop()
