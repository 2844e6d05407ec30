"""A relay whose partition lease was taken over while it published deletes nothing there."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import sqlalchemy as sa

from convergent.errors import TransportError
from convergent.messages import Message
from convergent.outbox import Relay, emit
from convergent.store import Store
from convergent.store.schema import leases, outbox
from convergent.transports.embedded import EmbeddedTransport
from tests.contract.transports.brokers import unique_topic


class TakenOverWhilePublishing(EmbeddedTransport):
    """Publishes, and meanwhile another relay takes every lease (a new token)."""

    def __init__(self, store: Store, fail: bool) -> None:
        super().__init__(store)
        self.fail = fail

    async def publish(self, messages: Sequence[Message]) -> list[BaseException | None]:
        results = await super().publish(messages)
        async with self.store.begin() as conn:
            await conn.execute(
                sa.update(leases)
                .where(leases.c.name.like("relay/%"), ~leases.c.name.like("relay/member/%"))
                .values(holder="other", token="theirs")
            )
        if self.fail:  # the path that records failures too
            return [TransportError("no"), *results[1:]]
        return results


@pytest.mark.parametrize("fail", [False, True])
async def test_rows_stay_for_the_new_holder(store: Store, fail: bool) -> None:
    topic = unique_topic()
    async with store.begin() as conn:
        for i in range(3):
            await emit(conn, topic.name, f"k{i}", "t", {"i": i})
    relay = Relay(store, TakenOverWhilePublishing(store, fail))
    await relay.run_once()
    async with store.read() as conn:
        left = (await conn.execute(sa.select(outbox.c.attempts))).scalars().all()
    assert left == [0, 0, 0]  # nothing deleted, no attempt recorded: not ours any more
    assert relay.published == 0
