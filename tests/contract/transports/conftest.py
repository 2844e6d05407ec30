"""Transport fixtures: embedded (SQLite, PostgreSQL), NATS and Kafka (tansu), isolated per test."""

from tests.contract.transports.brokers import broker, broker_store, kafka_url, transport

__all__ = ["broker", "broker_store", "kafka_url", "transport"]
