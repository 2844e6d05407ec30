"""Topic payloads may be dataclasses, models, datetimes, Decimals...: JSON on the wire, the
declared type again in the consumer."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from convergent.errors import ConfigurationError, SchemaViolation
from convergent.ids import new_id
from convergent.outbox import declare_topic, emit
from convergent.store import Store
from convergent.store.schema import outbox


@dataclasses.dataclass
class Shipped:
    order: uuid.UUID
    at: datetime
    weight: Decimal


async def test_a_dataclass_payload_is_json_in_the_outbox_and_typed_again(store: Store) -> None:
    topic = declare_topic(f"shipped-{new_id()}", Shipped)
    sent = Shipped(uuid.UUID(int=1), datetime(2026, 12, 1, 9, tzinfo=UTC), Decimal("1.250"))
    async with store.begin() as conn:
        await emit(conn, topic, "o-1", "shop.shipped", sent)
    async with store.read() as conn:
        envelope = (await conn.execute(sa.select(outbox.c.envelope))).scalar_one()
    assert envelope["data"] == {
        "order": "00000000-0000-0000-0000-000000000001",
        "at": "2026-12-01T09:00:00Z",
        "weight": "1.250",
    }
    assert topic.decode(envelope["data"]) == sent


async def test_a_payload_of_the_wrong_shape_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    topic = declare_topic(f"shipped-{new_id()}", Shipped)
    async with store.begin() as conn:
        with pytest.raises(SchemaViolation, match="does not match Shipped"):
            await emit(conn, topic, "o-1", "shop.shipped", {"order": "not a uuid"})


def test_a_payload_type_that_cannot_be_json_is_refused_when_declared() -> None:
    class Handle:
        pass

    with pytest.raises(ConfigurationError, match="cannot be a payload type"):
        declare_topic(f"handles-{new_id()}", Handle)
