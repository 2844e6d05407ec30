"""The embedded log in the outbox's own database: the relay checks its leases, reads, appends
and deletes in one transaction, so a row is appended if and only if it leaves the outbox."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from convergent.messages import Message
from convergent.outbox import Relay, emit
from convergent.outbox import relay as relay_module
from convergent.store import Store
from convergent.store.schema import log_entries
from convergent.transports.embedded import EmbeddedTransport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import outbox_count


async def _emit(store: Store, topic: str, n: int) -> None:
    async with store.begin() as conn:
        for i in range(n):
            await emit(conn, topic, f"k{i}", "tick", {"i": i})


async def _logged(store: Store, topic: str) -> int:
    async with store.read() as conn:
        count = sa.select(sa.func.count()).where(log_entries.c.topic == topic)
        return int(await conn.scalar(count) or 0)


async def _not_called(self: EmbeddedTransport, messages: Sequence[Message]) -> list[None]:
    raise AssertionError("published in a transaction of its own")


async def test_rows_move_to_the_log_in_the_relays_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topic().name
    relay = Relay(store, EmbeddedTransport(store))
    monkeypatch.setattr(EmbeddedTransport, "publish", _not_called)
    await _emit(store, topic, 3)
    assert await relay.run_once() == 3
    assert (await outbox_count(store), await _logged(store, topic)) == (0, 3)
    assert relay.published == 3


async def test_a_failure_after_the_append_leaves_both_as_they_were(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique_topic().name
    relay = Relay(store, EmbeddedTransport(store))
    await _emit(store, topic, 2)

    def broken_delete(self: Relay) -> sa.Delete:
        return sa.delete(sa.table("no_such_table"))

    monkeypatch.setattr(relay_module.Relay, "_delete_acked", broken_delete)
    with pytest.raises(sa.exc.DBAPIError):
        await relay.run_once()
    assert (await outbox_count(store), await _logged(store, topic)) == (2, 0)
    monkeypatch.undo()
    assert await relay.run_once() == 2  # the next pass moves them, once
    assert (await outbox_count(store), await _logged(store, topic)) == (0, 2)


async def test_a_transport_on_another_database_publishes_on_its_own(
    store: Store, tmp_path: object
) -> None:
    other = Store(f"sqlite+aiosqlite:///{tmp_path}/other.db")
    try:
        assert not Relay(store, EmbeddedTransport(other))._in_store
        assert Relay(store, EmbeddedTransport(store))._in_store
    finally:
        await other.close()
