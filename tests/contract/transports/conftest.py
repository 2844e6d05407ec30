"""Transport fixtures: embedded (on each database), NATS and Kafka (tansu), each isolated per test."""

from tests.contract.transports.brokers import broker, broker_store, kafka_url, transport

__all__ = ["broker", "broker_store", "kafka_url", "transport"]
