from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from convergent.errors import SchemaViolation, UnknownTopic
from convergent.topics import TOPICS, TopicKind, declare_topic, get_topic, partition_for


class Placed(BaseModel):
    order_id: str
    amount: int


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    before = dict(TOPICS)
    yield
    TOPICS.clear()
    TOPICS.update(before)


def test_a_payload_that_does_not_match_the_schema_is_refused() -> None:
    topic = declare_topic("unit.orders", Placed)
    with pytest.raises(SchemaViolation, match="amount"):
        topic.validate({"order_id": "o1", "amount": "lots"})


def test_a_valid_payload_comes_back_as_json_values() -> None:
    topic = declare_topic("unit.orders", Placed)
    assert topic.validate(Placed(order_id="o1", amount=3)) == {"order_id": "o1", "amount": 3}


def test_only_entity_topics_take_tombstones() -> None:
    assert declare_topic("unit.customers", kind=TopicKind.ENTITY).validate(None) is None
    with pytest.raises(SchemaViolation, match="tombstone"):
        declare_topic("unit.events").validate(None)


def test_the_json_schema_is_exported_from_the_model() -> None:
    schema = declare_topic("unit.orders", Placed).json_schema()
    assert schema["required"] == ["order_id", "amount"]


def test_an_undeclared_topic_name_is_an_error_naming_the_fix() -> None:
    with pytest.raises(UnknownTopic, match="declare_topic"):
        get_topic("unit.nowhere")


def test_redeclaring_a_topic_differently_is_refused() -> None:
    declare_topic("unit.orders", Placed)
    with pytest.raises(ValueError, match="already declared"):
        declare_topic("unit.orders", Placed, kind="entity")


def test_partitions_are_a_stable_hash_of_the_key() -> None:
    assert partition_for("customer-42", 16) == partition_for("customer-42", 16)
    assert {partition_for(f"k{i}", 8) for i in range(200)} == set(range(8))
