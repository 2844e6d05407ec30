"""Customer changes reach billing and analytics; analytics, down for a while, catches up."""

from __future__ import annotations

import sqlalchemy as sa

from convergent.outbox import Consumer, Relay, emit
from convergent.outbox.consumer import CONSUMERS
from convergent.store import Store
from convergent.transports import transport_from_url
from convergent_shop.customers import customers_topic
from convergent_shop.readmodels import (
    ANALYTICS_GROUP,
    billing_accounts,
    customer_analytics,
    customer_view,
)


async def change(store: Store, customer: str, version: int, *, delete: bool = False) -> None:
    state = (
        None
        if delete
        else {"id": customer, "name": f"n{version}", "email": "a@b.c", "version": version}
    )
    kind = "shop.customer.deleted" if delete else "shop.customer.updated"
    async with store.begin() as conn:
        data = None if delete else state
        await emit(conn, customers_topic, customer, kind, data, now=store.clock.now())


async def drain(relay: Relay, consumers: list[Consumer]) -> None:
    while await relay.run_once():
        pass
    for each in consumers:
        while await each.run_once(timeout=0.2):
            pass


async def test_analytics_down_for_a_while_catches_up_with_nothing_lost(shop_store: Store) -> None:
    store = shop_store
    transport = transport_from_url("embedded://", store)
    relay = Relay(store, transport)
    groups = {spec.group: Consumer.from_spec(store, transport, spec) for spec in CONSUMERS}
    analytics = groups.pop(ANALYTICS_GROUP)
    try:
        for version in range(1, 4):  # analytics is down for all of this
            await change(store, "c-1", version)
            await change(store, "c-2", version)
            await drain(relay, list(groups.values()))
        await change(store, "c-2", 4, delete=True)
        await drain(relay, list(groups.values()))

        await drain(relay, [analytics])  # back up: it reads from its committed offset
        await drain(relay, [analytics])  # a second pass finds nothing new to apply

        async with store.read() as conn:
            counted = dict(
                (
                    await conn.execute(
                        sa.select(customer_analytics.c.id, customer_analytics.c.changes)
                    )
                ).all()
            )
            billed = (
                await conn.execute(sa.select(billing_accounts.c.id, billing_accounts.c.version))
            ).all()
            viewed = (await conn.execute(sa.select(customer_view.c.id))).scalars().all()
        assert counted == {"c-1": 3, "c-2": 4}
        assert [tuple(r) for r in billed] == [("c-1", 3)]
        assert viewed == ["c-1"]
    finally:
        await transport.close()
