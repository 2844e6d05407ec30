"""Figures read while the system runs: missing tables read as None, present ones are counted."""

from __future__ import annotations

from convergent.store import Store
from convergent_shop import trading
from convergent_shop.sim.metrics import Sampler, read_figures


async def test_figures_count_what_exists_and_mark_the_rest_unavailable(shop_store: Store) -> None:
    async with shop_store.begin() as conn:
        await trading.place_order(
            conn, client_order_id="t1", symbol="ACME", side="buy", qty=1, now=shop_store.clock.now()
        )
    figures = await read_figures(shop_store)
    assert figures["orders"] == {}
    assert figures["trades_open"] == 1
    assert figures["dead_letters"] == 0
    assert figures["runs_in_flight"] == 0


async def test_the_sampler_adds_the_workload_counters(shop_store: Store) -> None:
    sampler = Sampler(shop_store, lambda: {"requests": 3})
    sample = await sampler.sample()
    assert sample["requests"] == 3
    assert sampler.latest is sample
