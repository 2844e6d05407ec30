"""Messages fixtures: every broker, NATS on both databases, Kafka on SQLite."""

import pytest

from tests.contract.transports.brokers import broker_for, broker_store, kafka_url, transport

__all__ = ["broker", "broker_store", "kafka_url", "transport"]


@pytest.fixture(
    params=["embedded-sqlite", "embedded-postgres", "nats-sqlite", "nats-postgres", "kafka"]
)
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    return broker_for(request)
