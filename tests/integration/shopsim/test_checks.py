"""The invariant checker: passes on a clean run, catches seeded violations."""

from __future__ import annotations

from datetime import timedelta

from convergent.ids import uuid7
from convergent.store import Store
from convergent_shop import inventory, payments, trading
from convergent_shop.orders import orders
from convergent_shop.sim.checks import CheckContext, CheckResult, run_checks
from tests.integration.shopsim.conftest import Psp


def by_name(results: list[CheckResult]) -> dict[str, str]:
    return {r.name: r.status for r in results}


async def charge(store: Store, psp: Psp, order_id: str) -> None:
    now = store.clock.now()
    async with store.begin() as conn:
        await payments.authorize(conn, psp.client, order_id, "9.99", "EUR", f"pay-{order_id}", now)
    async with store.begin() as conn:
        await payments.capture(conn, psp.client, order_id, f"cap-{order_id}", now)


async def test_a_clean_run_passes_every_check_that_applies(shop_store: Store, psp: Psp) -> None:
    await charge(shop_store, psp, "o1")
    async with shop_store.begin() as conn:
        await inventory.stock_up(conn, "apple", 5)
    results = by_name(await run_checks(CheckContext(shop_store, await psp.client.ledger())))
    assert results["charges_match_payments"] == "pass"
    assert results["no_double_charge"] == "pass"
    assert results["inventory_conserved"] == "pass"
    assert results["no_stuck_idempotency_keys"] == "pass"
    assert results["dead_letters_empty"] == "pass"


async def test_a_double_charge_is_detected(shop_store: Store, psp: Psp) -> None:
    await charge(shop_store, psp, "o1")
    extra = await psp.client.authorize("rogue-key", amount="9.99", currency="EUR", reference="o1")
    await psp.client.capture(extra["id"])
    results = by_name(await run_checks(CheckContext(shop_store, await psp.client.ledger())))
    assert results["no_double_charge"] == "fail"


async def test_a_charge_the_shop_does_not_know_is_detected(shop_store: Store, psp: Psp) -> None:
    made = await psp.client.authorize("k", amount="5.00", currency="EUR", reference="ghost")
    await psp.client.capture(made["id"])
    results = await run_checks(CheckContext(shop_store, await psp.client.ledger()))
    check = next(r for r in results if r.name == "charges_match_payments")
    assert check.status == "fail"
    assert check.data["extra"] == ["ghost"]


async def test_checks_without_their_tables_are_skipped(store: Store) -> None:
    results = by_name(await run_checks(CheckContext(store, None)))
    assert results["orders_terminal"] == "skipped"
    assert results["no_double_charge"] == "skipped"
    assert results["inventory_conserved"] == "skipped"


async def test_an_order_not_final_fails_and_names_its_state(
    shop_store: Store,
) -> None:
    now = shop_store.clock.now()
    async with shop_store.begin() as conn:
        await conn.execute(
            orders.insert().values(
                id=uuid7(),
                client="c",
                customer_id="c1",
                items=[],
                amount=1,
                currency="EUR",
                state="pending",
                version=1,
                created_at=now,
                updated_at=now,
            )
        )
    results = await run_checks(CheckContext(shop_store, None))
    check = next(r for r in results if r.name == "orders_terminal")
    assert check.status == "fail"
    assert "1 orders not final: {'pending': 1}" in check.detail


async def test_a_key_in_progress_past_its_lock_is_stuck(shop_store: Store) -> None:
    now = shop_store.clock.now()
    table = shop_store.tables.idempotency_keys
    async with shop_store.begin() as conn:
        await conn.execute(
            table.insert().values(
                scope="c",
                key="k",
                fingerprint="f",
                status="in_progress",
                locked_until=now - timedelta(minutes=1),
                created_at=now,
                expires_at=now + timedelta(days=1),
            )
        )
    results = by_name(await run_checks(CheckContext(shop_store, None)))
    assert results["no_stuck_idempotency_keys"] == "fail"


async def test_a_key_answered_with_two_orders_fails_one_order_per_key(store: Store) -> None:
    ctx = CheckContext(store, None, {"k1": {"a"}, "k2": {"b", "c"}})
    results = {r.name: r for r in await run_checks(ctx)}
    assert results["one_order_per_key"].status == "fail"
    assert list(results["one_order_per_key"].data["keys"]) == ["k2"]


async def test_a_500_answered_to_a_client_fails_no_internal_errors(store: Store) -> None:
    failing = {
        r.name: r for r in await run_checks(CheckContext(store, None, None, {202: 9, 500: 1}))
    }
    assert failing["no_internal_errors"].status == "fail"
    assert failing["no_internal_errors"].detail.startswith("1 of 10 answers were 500")
    outage = {
        r.name: r for r in await run_checks(CheckContext(store, None, None, {202: 9, 503: 4}))
    }
    assert outage["no_internal_errors"].status == "pass"  # unavailable is not a bug


async def test_an_unfilled_trade_fails_trades_filled(shop_store: Store) -> None:
    async with shop_store.begin() as conn:
        await trading.place_order(
            conn, client_order_id="t1", symbol="ACME", side="buy", qty=5, now=shop_store.clock.now()
        )
    results = by_name(await run_checks(CheckContext(shop_store, None)))
    assert results["trades_filled"] == "fail"
    assert results["fills_applied_once"] == "pass"
