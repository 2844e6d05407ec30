"""``nats://host:4222``: NATS JetStream (the only module that imports ``nats``).

One stream per topic capturing ``<topic>.>``; a message goes to subject
``<topic>.<partition>.<key>`` (the partition is crc32(key) mod the topic's partitions, as on the
embedded log) with its CloudEvents attributes as ``ce-`` headers and ``Nats-Msg-Id`` = its id, so
a republish within the stream's duplicate window is dropped by the server. Entity topics keep the
latest message per subject (``max_msgs_per_subject=1``).

A consumer group is one durable pull consumer per partition (filter ``<topic>.<partition>.>``)
with ``max_ack_pending=1``: the server hands out a partition's next message only once the previous
one is acked, so a message waiting for its retry (``nak`` with a delay, or redelivery after its
consumer died) holds back the rest of its partition, across every process of the group, while the
other partitions flow. The cost: one message in flight per partition.

A cluster is several seed URLs, comma-separated; ``?replicas=3`` makes each stream replicated:
``nats://10.0.0.1:4222,10.0.0.2:4222,10.0.0.3:4222?replicas=3``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from convergent.errors import MissingExtra

try:
    import nats
except ImportError as exc:
    raise MissingExtra("nats", "the NATS transport") from exc
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import BadRequestError, NotFoundError

from convergent import settings
from convergent.errors import ConfigurationError, NotSent, TransportError
from convergent.messages import Message
from convergent.outages import Outage, describe
from convergent.settings import mask
from convergent.topics import TOPICS, Topic, TopicKind, partition_for
from convergent.transports._options import (
    SECURITY_OPTIONS,
    BrokerSecurity,
    broker_security,
    prefixed,
)
from convergent.transports.base import (
    Delivery,
    Subscription,
    SubscriptionOptions,
    Transport,
    unreadable,
)

log = logging.getLogger(__name__)

__all__ = [
    "NatsOptions",
    "NatsTransport",
    "nats_options",
    "parse_nats_url",
    "stream_name",
    "subject_for",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-:=@+]")


def stream_name(topic: str, prefix: str = "") -> str:
    """``cv_<topic>``, or ``cv_<prefix>__<topic>`` for a deployment with a name prefix."""
    name = f"{prefix}__{topic}" if prefix else topic
    return "cv_" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def durable_for(group: str) -> str:
    """A durable consumer name for ``group`` (NATS allows no ``.``, ``*``, ``>`` or spaces)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", group)


def subject_for(topic: str, key: str, partitions: int | None = None) -> str:
    """``<topic>.<partition>.<key>``; characters NATS reserves (``*``, ``>``, spaces) are
    %-escaped. ``partitions`` defaults to the declared topic's."""
    if partitions is None:
        spec = TOPICS.get(topic)
        partitions = spec.partitions if spec else 8  # 8: Topic's default
    partition = partition_for(key, partitions)
    return f"{topic}.{partition}.{quote(key, safe='') if _UNSAFE.search(key) or not key else key}"


@dataclass(frozen=True)
class NatsOptions:
    """What a NATS URL says: seeds, stream limits, and the prefix, TLS and credentials."""

    servers: list[str]
    replicas: int = 1
    max_age: float | None = None  # seconds a stream keeps a message
    max_bytes: int | None = None  # a stream's size limit (oldest messages go first)
    security: BrokerSecurity = field(default_factory=BrokerSecurity)


_NATS_OPTIONS = frozenset({"replicas", "max_age", "max_bytes", "creds"}) | SECURITY_OPTIONS


def nats_options(url: str) -> NatsOptions:
    """``nats://[user:password@]a:4222,b:4222?replicas=3&max_age=86400&prefix=staging&...``;
    ``tls://`` (or ``?tls=1``, or a CA) turns TLS on. Settings fill in what the URL leaves out."""
    servers, _, query = url.partition("?")
    seeds = [s if "://" in s else f"nats://{s}" for s in servers.split(",") if s.strip()]
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        replicas = int(options.get("replicas", "1"))
        max_age = float(options["max_age"]) if "max_age" in options else None
        max_bytes = int(options["max_bytes"]) if "max_bytes" in options else None
        valid = (
            1 <= replicas <= 5
            and (max_age is None or max_age > 0)
            and (max_bytes is None or max_bytes > 0)
        )
    except ValueError:
        valid = False
    if not valid or set(options) - _NATS_OPTIONS:
        raise ConfigurationError(
            f"bad NATS URL {url!r}: the options are ?replicas=N (1 to 5), max_age=SECONDS, "
            "max_bytes=N, prefix=NAME, tls=1, tls_ca=PATH, tls_cert=PATH, tls_key=PATH, "
            "creds=PATH"
        )
    security = broker_security(options, tls_scheme=url.lower().startswith("tls://"))
    return NatsOptions(seeds, replicas, max_age, max_bytes, security)


def parse_nats_url(url: str) -> tuple[list[str], int]:
    """The seed servers and the stream replica count of ``nats://a:4222,b:4222?replicas=3``."""
    options = nats_options(url)
    return options.servers, options.replicas


class NatsTransport(Transport):
    def __init__(
        self,
        url: str,
        *,
        duplicate_window: float = 120.0,
        publish_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        fast_path: bool | None = None,
    ) -> None:
        self.url = url
        self.options = nats_options(url)
        self.servers, self.replicas = self.options.servers, self.options.replicas
        self.prefix = self.options.security.prefix
        self.connect_timeout = connect_timeout
        self.duplicate_window = duplicate_window
        self.publish_timeout = publish_timeout
        # framing our own PUB frames is tested on the pinned nats-py range; off, nats-py's
        # publish carries everything (a newer client, a protocol change, a suspected bug)
        self.fast_path = settings.load().nats_fast_path if fast_path is None else fast_path
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._acks: _Acks | None = None
        self._topics: set[str] = set()
        self.partitions: dict[str, int] = {}  # topic -> its stream's partition count
        self._subjects: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()
        self._outage = Outage(f"NATS at {mask(url)}", log)

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise TransportError("NATS transport not started; call start() first")
        return self._js

    async def start(self) -> None:
        async with self._lock:
            if self._nc is not None and self._nc.is_connected:
                return
            try:
                # reconnects forever once connected, but the first connect must fail fast
                # (nats-py would otherwise retry it forever too)
                self._nc = await asyncio.wait_for(
                    nats.connect(
                        self.servers,
                        connect_timeout=2,
                        max_reconnect_attempts=-1,
                        # one line per outage instead of nats-py's traceback per reconnect
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                        **self._auth(),
                    ),
                    self.connect_timeout,
                )
            except Exception as exc:
                raise TransportError(f"cannot reach NATS at {self.url}: {describe(exc)}") from exc
            self._js = self._nc.jetstream()
            self._acks = _Acks(self._nc)
            await self._acks.start()

    async def _on_error(self, exc: Exception) -> None:
        self._outage.down(exc)

    async def _on_disconnected(self) -> None:
        if self._nc is not None:  # not our own close()
            self._outage.down("disconnected")

    async def _on_reconnected(self) -> None:
        self._outage.up()

    def _auth(self) -> dict[str, Any]:
        """TLS and credentials for ``nats.connect`` (user:password in a seed URL also works)."""
        security = self.options.security
        out: dict[str, Any] = {}
        context = security.ssl_context()
        if context is not None:
            out["tls"] = context
        if security.credentials:
            out["user_credentials"] = security.credentials
        if security.username:
            out["user"], out["password"] = security.username, security.password
        return out

    def _subject(self, topic: str, key: str) -> str:
        """Memoized ``subject_for`` (hashing and escaping per message showed in the relay)."""
        subject = self._subjects.get((topic, key))
        if subject is None:
            if len(self._subjects) >= 100_000:
                self._subjects.clear()
            subject = subject_for(self.subject_base(topic), key, self.partitions.get(topic))
            self._subjects[(topic, key)] = subject
        return subject

    def subject_base(self, topic: str) -> str:
        """``<topic>``, or ``<prefix>.<topic>`` for a deployment with a name prefix."""
        return prefixed(self.prefix, topic)

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc, self._js, self._acks = self._nc, None, None, None
            await nc.drain()

    async def ensure_topic(self, topic: Topic) -> None:
        """Create or update the topic's stream. Its partition count is recorded in the stream's
        description by whoever created it and read from there, so a process that never
        declared the topic (a relay without ``--import``) still publishes to the right one."""
        if topic.name in self._topics:
            return
        await self.start()
        name = stream_name(topic.name, self.prefix)
        base = self.subject_base(topic.name)
        for _ in range(3):
            try:
                info: api.StreamInfo | None = await self.js.stream_info(name)
            except NotFoundError:
                info = None
            recorded = _recorded_partitions(info.config.description if info else None)
            partitions = recorded or topic.partitions
            config = api.StreamConfig(
                name=name,
                description=f"convergent topic {topic.name}; partitions={partitions}",
                subjects=[f"{base}.>"],
                duplicate_window=self.duplicate_window,
                max_msgs_per_subject=1 if topic.kind is TopicKind.ENTITY else -1,
                storage=api.StorageType.FILE,
                num_replicas=self.replicas,
                max_age=self.options.max_age,
                max_bytes=self.options.max_bytes,
            )
            try:
                if info is None:
                    await self.js.add_stream(config)
                else:
                    await self.js.update_stream(config)
            except BadRequestError:
                if info is not None:
                    raise
                continue  # created meanwhile by another process: read what it recorded
            break
        self.partitions[topic.name] = partitions
        self._topics.add(topic.name)

    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        try:
            await self.start()
            for name in {m.topic for m in messages}:
                await self.ensure_topic(TOPICS.get(name) or Topic(name))
        except Exception as exc:
            return [TransportError(f"NATS unavailable: {exc}")] * len(messages)
        assert self._acks is not None  # set by start()
        subjects = [self._subject(m.topic, m.key) for m in messages]
        chains = _KeyChains(self._acks, messages, subjects, fast_path=self.fast_path)
        return await chains.run(self.publish_timeout)

    async def subscribe(
        self, topic: Topic, group: str, options: SubscriptionOptions | None = None
    ) -> Subscription:
        options = options or SubscriptionOptions()
        await self.ensure_topic(topic)
        assert self._nc is not None  # set by start() in ensure_topic
        stream = stream_name(topic.name, self.prefix)
        base = self.subject_base(topic.name)
        durables = []
        for p in range(self.partitions[topic.name]):
            config = api.ConsumerConfig(
                durable_name=f"{durable_for(group)}_p{p}",
                filter_subject=f"{base}.{p}.>",
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=options.ack_wait,
                max_deliver=options.max_deliver + 1,  # one spare: the consumer dead-letters first
                max_ack_pending=1,  # order per partition, across every member of the group
            )
            try:
                await self.js.add_consumer(stream, config)
            except BadRequestError:  # exists with other settings (an older ack_wait...): keep it
                await self.js.consumer_info(stream, config.durable_name or "")
            durables.append(config.durable_name or "")
        sub = NatsSubscription(self._nc, topic, base, stream, durables, options.ack_wait)
        await sub.start()
        return sub

    async def delete_topic(self, topic: str) -> None:
        """Remove the topic's stream (tests and operators)."""
        await self.start()
        with contextlib.suppress(NotFoundError):
            await self.js.delete_stream(stream_name(topic, self.prefix))
        self._topics.discard(topic)
        self.partitions.pop(topic, None)
        self._subjects.clear()


_SAFE_SUBJECT = re.compile(r"[!-~]+")  # printable, no whitespace: cannot break the protocol line
_SAFE_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NO_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_FIXED_KEYS = frozenset(
    [
        "ce-id",
        "ce-source",
        "ce-type",
        "ce-specversion",
        "ce-subject",
        "ce-time",
        "content-type",
        "Nats-Msg-Id",
    ]
)


def _frame(
    subject: str, reply: str, headers: dict[str, str], body: bytes, max_payload: int
) -> bytes | None:
    """One ``HPUB`` command, as nats-py would write it (values trimmed, CR/LF made spaces), or
    None when the client's own publish must handle it (odd subject or header, too large,
    not connected)."""
    if len(body) > max_payload or not _SAFE_SUBJECT.fullmatch(subject):
        return None
    for k in headers:
        if k not in _FIXED_KEYS and not _SAFE_HEADER_KEY.fullmatch(k):
            return None
    values = "".join(headers.values())
    if "\r" in values or "\n" in values:  # rare: translate only then
        headers = {k: v.translate(_NO_NEWLINES) for k, v in headers.items()}
    head = (
        "NATS/1.0\r\n" + "".join([f"{k}: {v.strip()}\r\n" for k, v in headers.items()]) + "\r\n"
    ).encode()
    size = len(head)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        size,
        size + len(body),
        head,
        body,
    )


class _Acks:
    """JetStream publish acks, all on one reply subscription of the connection.

    Publishing a batch as ready-made ``HPUB`` frames in one write, with a reply subject per
    message, costs a fraction of ``publish_async`` per message (no future, semaphore, random
    token, per-header validation or JSON-decoded ack), which was most of the relay's CPU."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox() + "."
        self.waiting: dict[str, Callable[[BaseException | None], None]] = {}
        self._tokens = itertools.count()

    async def start(self) -> None:
        await self.nc.subscribe(self.prefix + "*", cb=self._on_reply)

    @property
    def max_payload(self) -> int:
        # 0 (nothing fits) unless connected and the client has the write path we use
        if not self.nc.is_connected or not hasattr(self.nc, "_send_command"):
            return 0
        return self.nc.max_payload

    async def send(self, frames: bytes) -> None:
        """Hand already-framed ``HPUB`` commands to the client's write buffer and flush it."""
        await self.nc._send_command(frames)
        await self.nc._flush_pending()

    def expect(self, callback: Callable[[BaseException | None], None]) -> str:
        token = str(next(self._tokens))
        self.waiting[token] = callback
        return token

    def reply_to(self, token: str) -> str:
        return self.prefix + token

    async def _on_reply(self, msg: Msg) -> None:
        callback = self.waiting.pop(msg.subject[len(self.prefix) :], None)
        if callback is None:
            return  # answered after its publish call gave up on it
        data = msg.data
        if data[:1] == b"{" and b'"error":' not in data:  # {"stream":..,"seq":..}
            callback(None)
            return
        status = (msg.headers or {}).get("Status", "")
        reason = "no stream for this subject" if status == "503" else data.decode(errors="replace")
        callback(TransportError(f"NATS refused it: {reason}"))


class _KeyChains:
    """One publish call: pipelined across keys, one message in flight per key.

    A key's next message is sent when the previous one is acked, so a message that fails (an
    error reply, an ack lost with a dropped connection) is never overtaken on the broker by a
    later one of its key; those behind it answer ``NotSent``."""

    def __init__(
        self,
        acks: _Acks,
        messages: Sequence[Message],
        subjects: list[str],
        *,
        fast_path: bool = True,
    ) -> None:
        self.acks = acks
        self.fast_path = fast_path
        self.messages = messages
        self.results: list[BaseException | None] = [None] * len(messages)
        self.subjects = subjects
        self.behind: dict[str, deque[int]] = {}
        self.ready: deque[int] = deque()  # sendable now: the first of each key, then successors
        for i, subject in enumerate(self.subjects):
            queue = self.behind.get(subject)
            if queue is None:
                self.behind[subject] = deque()
                self.ready.append(i)
            else:
                queue.append(i)
        self.open = len(messages)  # without a final result yet
        self.in_flight: dict[int, str] = {}  # message index -> ack token
        self.wake = asyncio.Event()

    async def run(self, timeout: float) -> list[BaseException | None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.open:
            if self.ready:
                await self._send_ready()
            if not self.open:
                break
            self.wake.clear()  # no await since the loop above: no ack can be missed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), deadline - loop.time())
            if not self.wake.is_set():
                break
        for i, token in list(self.in_flight.items()):
            self.acks.waiting.pop(token, None)
            del self.in_flight[i]
            self._settled(i, TransportError("NATS publish ack timed out"))
        return self.results

    async def _send_ready(self) -> None:
        """Send every sendable message: those the fast path can frame in one write."""
        acks = self.acks
        max_payload = acks.max_payload
        framed: list[tuple[int, str]] = []
        frames: list[bytes] = []
        while self.ready:
            i = self.ready.popleft()
            m = self.messages[i]
            headers = {**m.ce_headers(), "Nats-Msg-Id": m.id}
            token = acks.expect(functools.partial(self._acked, i))
            body = m.body() or b""
            frame = (
                _frame(self.subjects[i], acks.reply_to(token), headers, body, max_payload)
                if self.fast_path
                else None
            )
            if frame is not None:
                framed.append((i, token))
                frames.append(frame)
                continue
            self.in_flight[i] = token  # before any await: its ack may come during one
            try:  # the client's own checks say why it cannot go
                await acks.nc.publish(
                    self.subjects[i], body, reply=acks.reply_to(token), headers=headers
                )
            except Exception as exc:
                self._not_published([(i, token)], exc)
        if frames:
            self.in_flight.update(framed)
            try:
                await acks.send(b"".join(frames))
            except Exception as exc:
                self._not_published(framed, exc)

    def _not_published(self, sent: list[tuple[int, str]], exc: Exception) -> None:
        for i, token in sent:
            self.acks.waiting.pop(token, None)
            if self.in_flight.pop(i, None) is not None:
                self._settled(i, TransportError(f"NATS publish failed: {exc}"))

    def _acked(self, i: int, error: BaseException | None) -> None:
        if self.in_flight.pop(i, None) is not None:
            self._settled(i, error)

    def _settled(self, i: int, error: BaseException | None) -> None:
        self.results[i] = error
        self.open -= 1
        queue = self.behind[self.subjects[i]]
        if error is None:
            if queue:
                self.ready.append(queue.popleft())
        else:
            while queue:
                self.results[queue.popleft()] = NotSent(
                    "not sent: an earlier message of its key failed in this batch"
                )
                self.open -= 1
        self.wake.set()


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _recorded_partitions(description: str | None) -> int | None:
    found = re.search(r"partitions=(\d+)", description or "")
    return int(found.group(1)) if found else None


def _partition_of(topic: str, subject: str) -> int:
    """The partition token of ``<topic>.<partition>.<key>`` (keys may hold dots)."""
    return int(subject[len(topic) + 1 :].partition(".")[0])


class NatsDelivery(Delivery):
    def __init__(self, topic: str, base: str, msg: Msg) -> None:
        self.msg = msg
        headers = dict(msg.headers or {})
        body = msg.data or None
        partition, _, key = msg.subject[len(base) + 1 :].partition(".")
        self.attempt = msg.metadata.num_delivered
        try:
            if "ce-subject" not in headers:  # published by hand: the key is in the subject
                headers["ce-subject"] = unquote(key)
            self.message = Message.from_ce_headers(topic, headers, body)
        except Exception as exc:  # not ours, or damaged: dead-lettered by the consumer
            seq = msg.metadata.sequence.stream
            self.message, self.problem, self.raw = unreadable(
                topic,
                unquote(key),
                headers.get("ce-id") or headers.get("Nats-Msg-Id") or f"nats-{seq}",
                f"NATS {msg.subject} #{seq}",
                exc,
                {"subject": msg.subject, "headers": headers, "body": _text(msg.data)},
            )
        self.order_key = f"p{partition}"

    async def ack(self) -> None:
        await self.msg.ack()

    async def nak(self, delay: float) -> None:
        await self.msg.nak(delay=delay)

    async def working(self) -> None:
        await self.msg.in_progress()  # restarts the ack_wait timer


class NatsSubscription(Subscription):
    """Pulls one message at a time from each partition's consumer, all into one inbox.

    A pull request stays open on the server until a message is free for it (the partition's
    previous one acked) or it expires; one is kept open per partition, so an ack is followed by
    the partition's next message without a round trip of ours."""

    def __init__(
        self,
        nc: Client,
        topic: Topic,
        base: str,
        stream: str,
        durables: list[str],
        ack_wait: float,
    ) -> None:
        self.nc = nc
        self.topic = topic
        self.base = base  # subjects are <base>.<partition>.<key>
        self.durables = durables
        self.requests = [f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{d}" for d in durables]
        self.inbox = nc.new_inbox()
        # short-lived requests: one left behind by a closed member would take a message and
        # hold its partition until ack_wait
        self.expires = min(5.0, max(0.5, ack_wait / 4))
        self.open: dict[int, float] = {}  # partition -> when its pull request expires
        self.ready: deque[Msg] = deque()
        self.wake = asyncio.Event()
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.inbox + ".*", cb=self._on_msg)

    async def _on_msg(self, msg: Msg) -> None:
        status = (msg.headers or {}).get("Status") if not msg.data else None
        if status == "100":  # idle heartbeat
            return
        if status is None:  # a message: it comes on its own subject, <topic>.<partition>.<key>
            self.open.pop(_partition_of(self.base, msg.subject), None)
            self.ready.append(msg)
        else:  # the request ended (408 expired...): it was sent with reply <inbox>.<partition>
            self.open.pop(int(msg.subject.rsplit(".", 1)[1]), None)
        self.wake.set()

    async def _pull(self) -> None:
        now = asyncio.get_running_loop().time()
        for p, request in enumerate(self.requests):
            if self.open.get(p, 0.0) > now:
                continue
            self.open[p] = now + self.expires + 1.0  # the server answers 408 by then
            body = json.dumps({"batch": 1, "expires": int(self.expires * 1e9)}).encode()
            await self.nc.publish(request, body, reply=f"{self.inbox}.{p}")

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self._pull()
            except Exception as exc:
                raise TransportError(f"NATS fetch failed: {exc}") from exc
            if self.ready:
                out: list[Delivery] = []
                while self.ready and len(out) < max_messages:
                    out.append(NatsDelivery(self.topic.name, self.base, self.ready.popleft()))
                return out
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), min(remaining, self.expires))

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        while self.ready:  # taken but never handed out: let another member have them now
            with contextlib.suppress(Exception):
                await self.ready.popleft().nak()
