from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from convergent.clock import ManualClock
from convergent.errors import SignatureInvalid
from convergent.store import Store
from convergent.store.schema import webhook_deliveries
from convergent.webhooks import Dispatcher, enqueue, rotate_secret, verify
from tests.integration.webhooks.conftest import AddEndpoint, settings
from tests.integration.webhooks.receiver import Receiver, Reply


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_running_dispatcher_is_woken_by_the_commit(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    await add_endpoint(receiver.url)
    dispatcher = Dispatcher(wstore, settings(poll_interval=30))  # only a wake-up can be in time
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        await asyncio.sleep(0.2)  # let it subscribe and go idle on an empty queue
        async with wstore.begin() as conn:
            await enqueue(conn, "order.paid", {"id": "o-1"})
        await until(lambda: len(receiver.requests) == 1, timeout=5)
    finally:
        stop.set()
        await task


async def test_a_slow_endpoint_does_not_hold_back_the_others(
    wstore: Store, add_endpoint: AddEndpoint
) -> None:
    slow = await Receiver(Reply(delay=1.5)).start()
    fast = await Receiver().start()
    try:
        await add_endpoint(slow.url)
        await add_endpoint(fast.url)
        dispatcher = Dispatcher(wstore, settings(per_endpoint_concurrency=1, timeout=5))
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        for n in range(5):
            async with wstore.begin() as conn:
                await enqueue(conn, "order.paid", {"n": n})
        await until(lambda: len(fast.requests) == 5, timeout=5)
        assert len(slow.requests) == 1  # still busy with its first callback
        stop.set()
        await task
    finally:
        await slow.stop()
        await fast.stop()


async def test_after_rotation_both_secrets_sign_until_the_grace_ends(
    wstore: Store,
    clock: ManualClock,
    dispatcher: Dispatcher,
    receiver: Receiver,
    add_endpoint: AddEndpoint,
) -> None:
    endpoint_id, old = await add_endpoint(receiver.url)
    async with wstore.begin() as conn:
        new = await rotate_secret(conn, endpoint_id, grace=timedelta(hours=24))
        await enqueue(conn, "order.paid", {"id": "o-1"})
    await dispatcher.drain()
    clock.advance(hours=25)
    async with wstore.begin() as conn:
        await enqueue(conn, "order.paid", {"id": "o-2"})
    await dispatcher.drain()
    during, after = receiver.requests
    for secret in (old, new):
        verify(secret, during.headers, during.body, now=clock.now() - timedelta(hours=25))
    assert len(during.headers["webhook-signature"].split()) == 2
    verify(new, after.headers, after.body, now=clock.now())
    with pytest.raises(SignatureInvalid):
        verify(old, after.headers, after.body, now=clock.now())


CRASHING_DISPATCHER = """
import asyncio, sys
from convergent.store import Store
from convergent.webhooks import AllowList, Dispatcher, WebhookSettings

async def main() -> None:
    store = Store(sys.argv[1])
    settings = WebhookSettings(allow=AllowList.parse(["127.0.0.1"]))
    await Dispatcher(store, settings).run_once()

asyncio.run(main())
"""


async def test_a_crash_after_sending_sends_again_with_the_same_webhook_id(
    database_url: str,
    wstore: Store,
    clock: ManualClock,
    receiver: Receiver,
    add_endpoint: AddEndpoint,
) -> None:
    await add_endpoint(receiver.url)
    clock.set(clock.now().__class__.now(clock.now().tzinfo))  # the child uses real time
    async with wstore.begin() as conn:
        message_id = await enqueue(conn, "order.paid", {"id": "o-1"})
    env = {**os.environ, "CONVERGENT_FAULTS": "webhooks.after_send_before_record"}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_DISPATCHER,
        database_url,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    assert await child.wait() == -9
    assert len(receiver.requests) == 1
    async with wstore.read() as conn:
        row = (await conn.execute(sa.select(webhook_deliveries))).one()
    assert (row.status, row.attempts) == ("pending", 1)  # claimed, its lease still running
    clock.advance(3600)  # the lease expires
    await Dispatcher(wstore, settings()).drain()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(message_id)] * 2


async def test_deleting_an_endpoint_during_a_send_loses_nothing_else(
    wstore: Store, receiver: Receiver, add_endpoint: AddEndpoint
) -> None:
    from convergent.webhooks import delete_endpoint, list_attempts

    doomed, _ = await add_endpoint(receiver.url)
    receiver.queue(Reply(delay=0.5))
    async with wstore.begin() as conn:
        await enqueue(conn, "order.paid", {"id": "o-1"})
    dispatcher = Dispatcher(wstore, settings())
    sending = asyncio.create_task(dispatcher.run_once())
    await asyncio.wait_for(receiver.received.wait(), 5)
    async with wstore.begin() as conn:
        await delete_endpoint(conn, doomed)
    assert await sending == 1
    kept, _ = await add_endpoint(receiver.url)
    async with wstore.begin() as conn:
        await enqueue(conn, "order.paid", {"id": "o-2"})
    assert await dispatcher.drain() == 1
    async with wstore.read() as conn:
        assert [a.outcome for a in await list_attempts(conn, kept)] == ["succeeded"]


async def unsettled(store: Store) -> int:
    async with store.read() as conn:
        left = sa.select(sa.func.count()).where(webhook_deliveries.c.status != "succeeded")
        return int((await conn.execute(left)).scalar_one())


async def test_a_burst_arrives_once_each_within_the_per_endpoint_limit_retries_included(
    wstore: Store, clock: ManualClock, add_endpoint: AddEndpoint
) -> None:
    """Attempts are recorded a batch at a time: successes and failures mixed in one batch."""
    from convergent.store.schema import webhook_attempts, webhook_endpoints

    receivers = [await Receiver(Reply(delay=0.01)).start() for _ in range(2)]
    try:
        for r in receivers:
            await add_endpoint(r.url)
        receivers[0].queue(*[Reply(status=500)] * 5)  # the first five fail once
        async with wstore.begin() as conn:
            for n in range(150):
                await enqueue(conn, "order.paid", {"n": n})
        dispatcher = Dispatcher(wstore, settings(per_endpoint_concurrency=4))
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            await until(lambda: sum(len(r.requests) for r in receivers) == 300, timeout=60)
            clock.advance(10)  # past the 5 s retry of the failed five
            await until(lambda: len(receivers[0].requests) == 155, timeout=30)
            deadline = time.monotonic() + 10
            while await unsettled(wstore):  # the last results are being recorded
                assert time.monotonic() < deadline, "deliveries not recorded in time"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
        for r in receivers:
            assert r.most_in_flight <= 4
            ids = [q.headers["webhook-id"] for q in r.requests]
            assert len(set(ids)) == 150
        async with wstore.read() as conn:
            outcomes = (
                await conn.execute(
                    sa.select(webhook_attempts.c.outcome, sa.func.count()).group_by(
                        webhook_attempts.c.outcome
                    )
                )
            ).all()
            streaks = (await conn.execute(sa.select(webhook_endpoints.c.failing_since))).scalars()
            assert list(streaks) == [None, None]  # the later successes ended the failure streak
        assert dict(outcomes) == {"succeeded": 300, "failed": 5}
    finally:
        for r in receivers:
            await r.stop()
