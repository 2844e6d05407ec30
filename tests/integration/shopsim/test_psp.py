from __future__ import annotations

import asyncio

import httpx
import pytest
import sqlalchemy as sa

from convergent.errors import PermanentError, TransientError
from convergent_shop.psp import psp_payments
from convergent_shop.psp_client import PspClient
from tests.integration.shopsim.conftest import Psp


async def count_payments(psp: Psp) -> int:
    async with psp.store.read() as conn:
        query = sa.select(sa.func.count()).select_from(psp_payments)
        return int((await conn.execute(query)).scalar_one())


async def test_the_same_key_returns_the_same_payment_and_charges_once(psp: Psp) -> None:
    first = await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    again = await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    assert first["status"] == "authorized"
    assert again["id"] == first["id"]
    assert await count_payments(psp) == 1


async def test_concurrent_authorizations_with_one_key_make_one_payment(psp: Psp) -> None:
    results = await asyncio.gather(
        *(psp.client.authorize("k1", amount="5", currency="EUR", reference="o1") for _ in range(8))
    )
    assert len({r["id"] for r in results}) == 1
    assert await count_payments(psp) == 1


async def test_the_same_key_with_another_body_is_refused_with_422(psp: Psp) -> None:
    await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    with pytest.raises(PermanentError) as caught:
        await psp.client.authorize("k1", amount="11.00", currency="EUR", reference="o1")
    assert caught.value.details["status"] == 422


async def test_lookup_by_key_finds_the_payment_or_answers_none(psp: Psp) -> None:
    made = await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    assert (await psp.client.lookup("k1")) == made
    assert await psp.client.lookup("never-seen") is None


async def test_capture_is_idempotent_by_state(psp: Psp) -> None:
    made = await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    await psp.client.capture(made["id"], "cap-1")
    again = await psp.client.capture(made["id"], "cap-1")
    assert again["status"] == "captured"
    ledger = await psp.client.ledger()
    assert ledger["captured"] == {"count": 1, "amount": "10.00"}


async def test_a_captured_payment_cannot_be_voided(psp: Psp) -> None:
    made = await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    await psp.client.capture(made["id"])
    with pytest.raises(PermanentError) as caught:
        await psp.client.void(made["id"])
    assert caught.value.details["status"] == 409


async def test_void_then_refund_paths_reach_their_states(psp: Psp) -> None:
    a = await psp.client.authorize("k1", amount="1.00", currency="EUR", reference="o1")
    b = await psp.client.authorize("k2", amount="2.00", currency="EUR", reference="o2")
    assert (await psp.client.void(a["id"]))["status"] == "voided"
    await psp.client.capture(b["id"])
    assert (await psp.client.refund(b["id"]))["status"] == "refunded"
    ledger = await psp.client.ledger()
    assert ledger["voided"]["count"] == 1
    assert ledger["refunded"] == {"count": 1, "amount": "2.00"}


async def test_the_ledger_counts_two_captured_payments_for_one_reference_as_double(
    psp: Psp,
) -> None:
    for key in ("k1", "k2"):
        made = await psp.client.authorize(key, amount="3.00", currency="EUR", reference="o1")
        await psp.client.capture(made["id"])
    ledger = await psp.client.ledger()
    assert ledger["double_charges"] == ["o1"]
    assert ledger["per_key"] == {"k1": 1, "k2": 1}


async def test_a_lost_response_commits_the_charge_then_drops_the_connection(psp: Psp) -> None:
    await psp.client.set_faults(lost_response_rate=1.0, seed=3)
    with pytest.raises(TransientError):
        await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    await psp.client.set_faults(lost_response_rate=0.0)
    found = await psp.client.lookup("k1")
    assert found is not None
    assert found["status"] == "authorized"


async def test_a_lost_response_is_a_cut_off_answer_on_the_wire(psp: Psp) -> None:
    await psp.client.set_faults(lost_response_rate=1.0)
    async with httpx.AsyncClient(base_url=psp.url, timeout=2) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(
                "/payments",
                json={"amount": "1", "currency": "EUR", "reference": "o"},
                headers={"Idempotency-Key": "k"},
            )


async def test_an_error_before_charging_leaves_no_payment(psp: Psp) -> None:
    await psp.client.set_faults(error_before_rate=1.0)
    with pytest.raises(TransientError) as caught:
        await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    assert caught.value.details["status"] == 503
    assert await count_payments(psp) == 0


async def test_an_error_after_charging_leaves_the_payment(psp: Psp) -> None:
    await psp.client.set_faults(error_after_rate=1.0)
    with pytest.raises(TransientError) as caught:
        await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    assert caught.value.details["status"] == 500
    assert await count_payments(psp) == 1


async def test_latency_past_the_client_timeout_is_a_transient_error(psp: Psp) -> None:
    await psp.client.set_faults(latency_ms=400)
    async with PspClient(psp.url, timeout=0.1) as impatient:
        with pytest.raises(TransientError):
            await impatient.authorize("k1", amount="1", currency="EUR", reference="o1")


async def test_authorize_without_a_key_is_refused(psp: Psp) -> None:
    async with httpx.AsyncClient(base_url=psp.url) as http:
        answer = await http.post(
            "/payments", json={"amount": "1", "currency": "EUR", "reference": "o"}
        )
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"


async def test_concurrent_capture_and_void_let_exactly_one_win(psp: Psp) -> None:
    made = await psp.client.authorize("k1", amount="10.00", currency="EUR", reference="o1")
    outcomes = await asyncio.gather(
        psp.client.capture(made["id"]), psp.client.void(made["id"]), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, PermanentError)]
    assert len(refused) == 1
    assert refused[0].details["status"] == 409
