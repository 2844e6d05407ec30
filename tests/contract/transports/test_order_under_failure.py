"""Order per key through retries, dead letters, two members and a killed member, every transport.

Each test asserts the order in which a consumer group applied each key's messages, and that none
was applied twice or lost. Other keys keep flowing while one waits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import dlq
from convergent.messages import Message
from convergent.outbox import Consumer
from convergent.retry import RetryPolicy
from convergent.store import Store
from convergent.store.schema import dead_letters, parked
from convergent.topics import Topic
from convergent.transports import Transport
from tests.contract.transports.brokers import unique_topic
from tests.integration.messages.helpers import create_effects, effect_rows, record_effect

OTHERS = [f"o{i}" for i in range(8)]  # spread over the partitions: some never share K's


def msg(topic: Topic, key: str, seq: int, **flags: Any) -> Message:
    return Message(topic.name, key, "tick", {"seq": seq, **flags})


async def applied(store: Store) -> dict[str, list[int]]:
    """seq numbers per key in the order they took effect; no message took effect twice."""
    rows = await effect_rows(store)
    ids = [r.message_id for r in rows]
    assert len(ids) == len(set(ids)), "a message was applied twice"
    out: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        out[r.key].append(r.seq)
    return dict(out)


async def until(what: Any, consumer: Consumer | None = None, timeout: float = 30) -> None:
    """Poll ``what()`` (running consumer passes meanwhile) until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await what():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what.__doc__}"
        if consumer is not None:
            await consumer.run_once(timeout=0.2)
        else:
            await asyncio.sleep(0.05)


async def letters(store: Store) -> list[Any]:
    async with store.read() as conn:
        return list((await conn.execute(sa.select(dead_letters))).all())


async def parked_count(store: Store) -> int:
    async with store.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(parked)) or 0)


@pytest.mark.parametrize("batch_size", [1, 100])
async def test_a_retry_holds_back_its_key_while_other_keys_flow(
    broker_store: Store, transport: Transport, batch_size: int
) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await create_effects(broker_store)
    failures = {"left": 1}

    async def handler(conn: AsyncConnection, message: Message) -> None:
        if message.key == "K" and message.data["seq"] == 1 and failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("transient")
        await record_effect(conn, message)

    consumer = Consumer(
        broker_store,
        transport,
        topic,
        f"g-{topic.name}",
        handler,
        retry=RetryPolicy(initial_delay=1.5, jitter=False),
        batch_size=batch_size,
    )
    try:
        assert await transport.publish([msg(topic, "K", 1)]) == [None]

        async def failed_once() -> bool:
            """K/1 failed once"""
            return failures["left"] == 0

        await until(failed_once, consumer)
        later = [msg(topic, "K", 2), msg(topic, "K", 3)] + [msg(topic, o, 1) for o in OTHERS]
        assert await transport.publish(later) == [None] * len(later)

        async def all_applied() -> bool:
            """every message applied"""
            return len(await effect_rows(broker_store)) == 11

        await until(all_applied, consumer)
        await consumer.run_once(timeout=0.3)  # nothing more arrives
    finally:
        await consumer.close()
    got = await applied(broker_store)
    assert got.pop("K") == [1, 2, 3]
    assert got == {o: [1] for o in OTHERS}
    first = (await effect_rows(broker_store))[0]
    assert first.key != "K"  # another key went while K/1 waited for its retry


@pytest.mark.parametrize("then", ["retry", "discard"])
async def test_a_dead_letter_parks_its_key_until_it_is_retried_or_discarded(
    broker_store: Store, transport: Transport, then: str
) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await create_effects(broker_store)
    broken = {"K": True}

    async def handler(conn: AsyncConnection, message: Message) -> None:
        if message.key == "K" and message.data["seq"] == 1 and broken["K"]:
            raise RuntimeError("poison")
        await record_effect(conn, message)

    consumer = Consumer(
        broker_store,
        transport,
        topic,
        f"g-{topic.name}",
        handler,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.05, jitter=False),
    )
    try:
        await transport.publish([msg(topic, "K", 1)])

        async def dead_lettered() -> bool:
            """K/1 dead-lettered"""
            return len(await letters(broker_store)) == 1

        await until(dead_lettered, consumer)
        later = [msg(topic, "K", 2), msg(topic, "K", 3)] + [msg(topic, o, 1) for o in OTHERS]
        await transport.publish(later)

        async def parked_and_others_applied() -> bool:
            """K/2 and K/3 parked, the other keys applied"""
            return await parked_count(broker_store) == 3 and len(
                await effect_rows(broker_store)
            ) == len(OTHERS)

        await until(parked_and_others_applied, consumer)
        assert "K" not in await applied(broker_store)
        [letter] = await letters(broker_store)
        broken["K"] = False
        if then == "retry":
            await dlq.retry(broker_store, str(letter.id))
        else:
            await dlq.discard(broker_store, str(letter.id))

        async def released() -> bool:
            """the parked messages were released"""
            return await parked_count(broker_store) == 0

        await until(released, consumer)
        await consumer.run_once(timeout=0.3)
    finally:
        await consumer.close()
    got = await applied(broker_store)
    assert got.pop("K") == ([1, 2, 3] if then == "retry" else [2, 3])
    assert got == {o: [1] for o in OTHERS}


async def test_skip_lets_the_key_go_on_past_its_dead_letter(
    broker_store: Store, transport: Transport
) -> None:
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await create_effects(broker_store)

    async def handler(conn: AsyncConnection, message: Message) -> None:
        if message.key == "K" and message.data["seq"] == 1:
            raise RuntimeError("poison")
        await record_effect(conn, message)

    consumer = Consumer(
        broker_store,
        transport,
        topic,
        f"g-{topic.name}",
        handler,
        retry=RetryPolicy(max_attempts=2, initial_delay=0.05, jitter=False),
        on_dead_letter="skip",
    )
    try:
        await transport.publish([msg(topic, "K", i) for i in (1, 2, 3)])

        async def applied_the_rest() -> bool:
            """K/2 and K/3 applied"""
            return len(await effect_rows(broker_store)) == 2

        await until(applied_the_rest, consumer)
    finally:
        await consumer.close()
    assert await applied(broker_store) == {"K": [2, 3]}
    assert len(await letters(broker_store)) == 1
    assert await parked_count(broker_store) == 0


def start_worker(broker: tuple[str, str], topic: Topic, markers: Path, log: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.contract.transports.order_worker",
                broker[0],
                broker[1],
                topic.name,
                str(topic.partitions),
                str(markers),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_two_member_processes_one_killed_mid_handler_keep_order_per_key(
    broker: tuple[str, str], broker_store: Store, transport: Transport, tmp_path: Path
) -> None:
    """Two processes of one group share the topic; some messages fail once; one member is
    SIGKILLed inside a handler. The survivor takes over: every key applied in order, once."""
    topic = unique_topic()
    await transport.ensure_topic(topic)
    await create_effects(broker_store)
    keys = [f"k{i}" for i in range(6)]
    sent = [
        msg(topic, key, seq, fail=(seq % 4 == 1), die=(key == "k0" and seq == 5))
        for seq in range(12)
        for key in keys
    ]
    assert await transport.publish(sent) == [None] * len(sent)
    markers = tmp_path / "markers"
    markers.mkdir()
    log = tmp_path / "workers.log"
    workers = [start_worker(broker, topic, markers, log) for _ in range(2)]
    try:

        async def all_applied() -> bool:
            """every message applied by the workers"""
            assert any(w.poll() is None for w in workers), log.read_text()
            return len(await effect_rows(broker_store)) >= len(sent)

        await until(all_applied, timeout=90)
        assert (markers / f"die-{sent[5 * len(keys)].id}").exists()
        assert sorted(w.poll() for w in workers if w.poll() is not None) == [-signal.SIGKILL]
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                await asyncio.to_thread(w.wait, 20)
            except subprocess.TimeoutExpired:
                w.kill()
    assert await applied(broker_store) == {key: list(range(12)) for key in keys}
