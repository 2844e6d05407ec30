"""Brokers behind one port (`base.Transport`); pick one with `transport_from_url`."""

from __future__ import annotations

from convergent import settings
from convergent.errors import ConfigurationError
from convergent.store import Store
from convergent.transports.base import Delivery, Subscription, SubscriptionOptions, Transport
from convergent.transports.embedded import EmbeddedTransport

__all__ = ["Delivery", "Subscription", "SubscriptionOptions", "Transport", "transport_from_url"]


def transport_from_url(url: str | None, store: Store) -> Transport:
    """``embedded://`` (default), ``nats://host:4222`` or ``kafka://host:9092``."""
    url = settings.broker_url(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme == "embedded":
        return EmbeddedTransport(store, url)
    # the broker drivers load only when their broker is used
    if scheme in ("nats", "tls"):
        from convergent.transports.nats import NatsTransport

        return NatsTransport(url)
    if scheme == "kafka":
        from convergent.transports.kafka import KafkaTransport

        return KafkaTransport(url)
    raise ConfigurationError(
        f"unsupported broker URL {url!r}: use embedded://, nats://host:4222 or kafka://host:9092"
    )
