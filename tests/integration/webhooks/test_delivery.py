from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.store import Store
from convergent.store.schema import (
    dead_letters,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
    webhook_messages,
)
from convergent.webhooks import (
    Dispatcher,
    WebhookEvent,
    enqueue,
    get_endpoint,
    list_attempts,
    recover,
    resend,
    verify,
)
from tests.integration.webhooks.conftest import AddEndpoint, settings
from tests.integration.webhooks.receiver import Receiver, Reply

ORDER = {"id": "o-1", "state": "paid", "version": 3}


async def emit(store: Store, event_type: str = "order.paid", data: Any = ORDER) -> uuid.UUID:
    async with store.begin() as conn:
        return await enqueue(conn, event_type, data)


async def delivery(store: Store) -> Any:
    async with store.read() as conn:
        return (await conn.execute(sa.select(webhook_deliveries))).one()


async def test_a_committed_event_arrives_signed_with_type_and_data(
    wstore: Store, dispatcher: Dispatcher, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    _, secret = await add_endpoint(receiver.url)
    message_id = await emit(wstore)
    assert await dispatcher.drain() == 1
    [request] = receiver.requests
    payload = verify(secret, request.headers, request.body, now=wstore.clock.now())
    assert payload["type"] == "order.paid"
    assert payload["data"] == ORDER
    assert request.headers["webhook-id"] == str(message_id)
    assert (await delivery(wstore)).status == "succeeded"


async def test_nothing_is_sent_when_the_enqueuing_transaction_rolls_back(
    wstore: Store, dispatcher: Dispatcher, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    await add_endpoint(receiver.url)
    try:
        async with wstore.begin() as conn:
            await enqueue(conn, "order.paid", ORDER)
            raise RuntimeError("the business write failed")
    except RuntimeError:
        pass
    assert await dispatcher.drain() == 0
    assert receiver.requests == []


async def test_events_fan_out_only_to_enabled_endpoints_that_want_the_type(
    wstore: Store, dispatcher: Dispatcher, add_endpoint: AddEndpoint
) -> None:
    receivers = [await Receiver().start() for _ in range(3)]
    try:
        await add_endpoint(receivers[0].url, ["order.*"])
        await add_endpoint(receivers[1].url, ["booking.confirmed"])
        disabled, _ = await add_endpoint(receivers[2].url)
        async with wstore.begin() as conn:
            await conn.execute(
                webhook_endpoints.update()
                .where(webhook_endpoints.c.id == disabled)
                .values(enabled=False)
            )
        await emit(wstore, "order.paid")
        await dispatcher.drain()
        assert [len(r.requests) for r in receivers] == [1, 0, 0]
    finally:
        for r in receivers:
            await r.stop()


async def test_an_event_no_endpoint_wants_records_nothing(
    wstore: Store, dispatcher: Dispatcher, add_endpoint: AddEndpoint, receiver: Receiver
) -> None:
    await add_endpoint(receiver.url, ["order.completed"])
    await emit(wstore, "order.paid")  # nobody wants it: no message, no delivery
    async with wstore.read() as conn:
        assert (await conn.scalar(sa.select(sa.func.count()).select_from(webhook_messages))) == 0
    wanted = await emit(wstore, "order.completed")
    await dispatcher.drain()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(wanted)]
    async with wstore.read() as conn:
        assert (await conn.scalar(sa.select(sa.func.count()).select_from(webhook_messages))) == 1


async def test_a_500_is_retried_on_the_schedule_with_the_same_webhook_id(
    wstore: Store, clock: ManualClock, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    dispatcher = Dispatcher(wstore, settings(schedule=(0, 5, 300)))
    await add_endpoint(receiver.url)
    receiver.queue(Reply(500), Reply(500))
    await emit(wstore)
    assert await dispatcher.run_once() == 1
    assert (await delivery(wstore)).next_attempt_at == clock.now().replace() + _s(5)
    clock.advance(4.9)
    assert await dispatcher.run_once() == 0
    clock.advance(0.1)
    assert await dispatcher.run_once() == 1
    clock.advance(299)
    assert await dispatcher.run_once() == 0
    clock.advance(1)
    assert await dispatcher.run_once() == 1
    assert (await delivery(wstore)).status == "succeeded"
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len(receiver.requests) == 3


async def test_a_timeout_is_a_failed_attempt_retried_later(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    dispatcher = Dispatcher(wstore, settings(timeout=0.2, schedule=(0, 5)))
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.queue(Reply(delay=1.0))
    await emit(wstore)
    await dispatcher.run_once()
    async with wstore.read() as conn:
        [attempt] = await list_attempts(conn, endpoint_id)
    assert attempt.outcome == "timeout"
    row = await delivery(wstore)
    assert (row.status, row.next_attempt_at) == ("pending", wstore.clock.now() + _s(5))


async def test_an_exhausted_delivery_is_dead_lettered_and_reported(
    wstore: Store, clock: ManualClock, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    seen: list[WebhookEvent] = []
    dispatcher = Dispatcher(wstore, settings(schedule=(0, 5)), on_event=seen.append)
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.default = Reply(500)
    message_id = await emit(wstore)
    await dispatcher.run_once()
    clock.advance(5)
    await dispatcher.run_once()
    assert (await delivery(wstore)).status == "failed"
    async with wstore.read() as conn:
        dead = (await conn.execute(sa.select(dead_letters))).one()
        event = (await conn.execute(sa.select(webhook_events))).one()
    assert (dead.source, dead.key, dead.attempts) == ("webhook", str(message_id), 2)
    assert event.kind == "delivery_exhausted"
    assert [(e.kind, e.endpoint_id) for e in seen] == [("delivery_exhausted", endpoint_id)]


async def test_410_gone_disables_the_endpoint_and_stops_retrying(
    wstore: Store, dispatcher: Dispatcher, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.queue(Reply(410))
    await emit(wstore)
    await dispatcher.drain()
    async with wstore.read() as conn:
        endpoint = await get_endpoint(conn, endpoint_id)
    assert endpoint.enabled is False
    assert "410" in (endpoint.disabled_reason or "")
    assert (await delivery(wstore)).status == "failed"
    assert len(receiver.requests) == 1


async def test_retry_after_on_503_pushes_the_next_attempt_back(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    dispatcher = Dispatcher(wstore, settings(schedule=(0, 5, 5)))
    await add_endpoint(receiver.url)
    receiver.queue(Reply(503, headers={"Retry-After": "120"}))
    await emit(wstore)
    await dispatcher.run_once()
    assert (await delivery(wstore)).next_attempt_at == wstore.clock.now() + _s(120)


async def test_redirects_are_not_followed(
    wstore: Store, dispatcher: Dispatcher, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.queue(Reply(302, headers={"Location": receiver.url + "/elsewhere"}))
    await emit(wstore)
    await dispatcher.run_once()
    assert [r.path for r in receiver.requests] == ["/hook"]
    async with wstore.read() as conn:
        [attempt] = await list_attempts(conn, endpoint_id)
    assert (attempt.outcome, attempt.status_code) == ("failed", 302)


async def test_an_endpoint_failing_for_the_whole_period_is_disabled(
    wstore: Store, clock: ManualClock, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    from datetime import timedelta

    dispatcher = Dispatcher(
        wstore, settings(schedule=(0, 1800, 1800, 1800), disable_after=timedelta(hours=1))
    )
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.default = Reply(500)
    await emit(wstore)
    await dispatcher.run_once()
    clock.advance(1800)
    await dispatcher.run_once()
    async with wstore.read() as conn:
        assert (await get_endpoint(conn, endpoint_id)).enabled is True
    clock.advance(1800)
    await dispatcher.run_once()
    async with wstore.read() as conn:
        endpoint = await get_endpoint(conn, endpoint_id)
    assert endpoint.enabled is False
    assert "failing continuously" in (endpoint.disabled_reason or "")


async def test_a_destination_that_became_private_is_refused_at_send_time(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    from convergent.webhooks import AllowList

    endpoint_id, _ = await add_endpoint(receiver.url)  # allowed when registered
    dispatcher = Dispatcher(wstore, settings(allow=AllowList()))
    await emit(wstore)
    await dispatcher.run_once()
    assert receiver.requests == []
    async with wstore.read() as conn:
        [attempt] = await list_attempts(conn, endpoint_id)
    assert attempt.outcome == "refused"


async def test_every_attempt_is_logged_with_status_and_a_bounded_snippet(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    dispatcher = Dispatcher(wstore, settings(snippet_bytes=10, schedule=(0, 0)))
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.queue(Reply(500, body=b"x" * 5000), Reply(200, body=b"thanks"))
    await emit(wstore)
    await dispatcher.drain()
    async with wstore.read() as conn:
        attempts = await list_attempts(conn, endpoint_id)
    assert [(a.attempt, a.status_code, a.response_snippet) for a in attempts] == [
        (2, 200, "thanks"),
        (1, 500, "x" * 10),
    ]


async def test_resend_delivers_the_same_message_again_with_its_id(
    wstore: Store, dispatcher: Dispatcher, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    endpoint_id, _ = await add_endpoint(receiver.url)
    message_id = await emit(wstore)
    await dispatcher.drain()
    async with wstore.begin() as conn:
        await resend(conn, message_id, endpoint_id)
    await dispatcher.drain()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(message_id)] * 2


async def test_recover_resends_only_failed_deliveries_since_the_time(
    wstore: Store, clock: ManualClock, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    dispatcher = Dispatcher(wstore, settings(schedule=(0,)))
    endpoint_id, _ = await add_endpoint(receiver.url)
    receiver.queue(Reply(500))
    old = await emit(wstore, data={"n": 1})
    await dispatcher.drain()
    clock.advance(3600)
    since = clock.now()
    receiver.queue(Reply(500), Reply(200))
    failed = await emit(wstore, data={"n": 2})
    ok = await emit(wstore, data={"n": 3})
    await dispatcher.drain()
    async with wstore.begin() as conn:
        assert await recover(conn, endpoint_id, since) == 1
    receiver.requests.clear()
    await dispatcher.drain()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(failed)]
    assert str(old) != str(ok)


async def test_body_is_compact_json_of_the_stored_payload(
    wstore: Store, dispatcher: Dispatcher, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    await add_endpoint(receiver.url)
    await emit(wstore)
    await dispatcher.drain()
    body = json.loads(receiver.requests[0].body)
    assert body["timestamp"] == wstore.clock.now().isoformat()


def _s(seconds: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=seconds)


async def test_attempts_are_counted_by_outcome_in_prometheus(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    from prometheus_client import REGISTRY

    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value("convergent_webhook_attempts_total", {"outcome": outcome})
        return value or 0.0

    before = count("failed"), count("succeeded")
    await add_endpoint(receiver.url)
    receiver.queue(Reply(500))
    await emit(wstore)
    await Dispatcher(wstore, settings(schedule=(0, 0))).drain()
    assert (count("failed"), count("succeeded")) == (before[0] + 1, before[1] + 1)


async def test_concurrent_dispatchers_send_each_delivery_once(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    import asyncio

    await add_endpoint(receiver.url)
    async with wstore.begin() as conn:
        for n in range(30):
            await enqueue(conn, "order.paid", {"n": n})
    dispatchers = [Dispatcher(wstore, settings(batch_size=7)) for _ in range(3)]
    await asyncio.gather(*(d.drain() for d in dispatchers))
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == len(set(ids)) == 30
