"""The cluster harness: hosts that reach each other, a replicated broker, and faults that bite.

The tests share one lab and run in file order; the last one tears it down.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import nats
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from convergent.messages import Message
from convergent.transports.nats import NatsTransport, parse_nats_url, stream_name
from convergent_shop.sim.cluster import Lab
from convergent_shop.sim.cluster.network import RUNTIME_ROOT
from tests.integration.cluster.conftest import HOSTCLIENT, on_host, session_on_host

pytestmark = pytest.mark.cluster


async def stream_info(lab: Lab, topic: str) -> nats.js.api.StreamInfo:
    servers, _ = parse_nats_url(lab.broker_url)
    nc = await nats.connect(servers, connect_timeout=2)
    try:
        return await nc.jetstream().stream_info(stream_name(topic))
    finally:
        await nc.close()


async def test_a_client_host_writes_to_the_database_host_and_publishes_to_three_replicas(
    lab: Lab,
) -> None:
    done = on_host(lab, "client", "write-and-publish", lab.database_url, lab.broker_url, "lab.a")
    assert done == {"written": True, "published": True, "error": "None"}

    engine = create_async_engine(lab.database_url)
    try:
        async with engine.connect() as conn:
            notes = (await conn.execute(sa.text("SELECT note FROM lab_rows"))).scalars().all()
    finally:
        await engine.dispose()
    assert notes == ["from the client host"]
    info = await stream_info(lab, "lab.a")
    assert info.config.num_replicas == 3
    assert info.state.messages == 1
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2


async def test_the_broker_takes_publishes_with_its_stream_leader_killed_and_the_node_catches_up(
    lab: Lab,
) -> None:
    transport = NatsTransport(lab.broker_url)  # from the controller: a stream with a leader
    try:
        assert await transport.publish([Message("lab.b", "k", "lab.n", {})]) == [None]
    finally:
        await transport.close()
    info = await stream_info(lab, "lab.b")
    assert info.cluster is not None
    assert info.cluster.leader in lab.nats_hosts
    leader = info.cluster.leader

    lost = lab.nats_down(leader, kill=True)
    published = on_host(lab, "client", "publish", lab.broker_url, "lab.b", "5", "30")
    assert published["sent"] == 5, published
    lab.nats_up(leader, lost)

    deadline = time.monotonic() + 30
    while True:
        info = await stream_info(lab, "lab.b")
        assert info.cluster is not None
        replicas = info.cluster.replicas or []
        if info.state.messages == 6 and len(replicas) == 2 and all(r.current for r in replicas):
            break
        assert time.monotonic() < deadline, f"the returned node did not catch up: {info.cluster}"
        await asyncio.sleep(0.2)
    assert [e.kind for e in lab.events[-1:]] == ["nats-down"]
    assert lost.end is not None


def test_the_database_host_crashes_and_comes_back_with_its_data(lab: Lab) -> None:
    db = lab.host("db").address
    crash = lab.db_crash()
    assert on_host(lab, "client", "connect", db, "5432", "2")["outcome"].startswith("error")
    lab.db_restart(crash)
    assert on_host(lab, "client", "connect", db, "5432", "2")["outcome"] == "connected"
    psql = ["psql", "-h", db, "-U", "postgres", "-d", "convergent", "-tAc"]
    rows = subprocess.run([*psql, "SELECT note FROM lab_rows"], capture_output=True, text=True)
    assert rows.stdout.split("\n")[0] == "from the client host"
    assert crash.end is not None


def test_a_partitioned_host_cannot_reach_its_peers_until_healed(lab: Lab) -> None:
    db = lab.host("db").address
    assert on_host(lab, "client", "connect", db, "5432", "2")["outcome"] == "connected"

    cut = lab.faults.partition("client", ["db"])
    # silently dropped, as on a real network: the connection times out, nothing is refused
    assert on_host(lab, "client", "connect", db, "5432", "1")["outcome"] == "timeout"
    assert on_host(lab, "spare", "connect", db, "5432", "2")["outcome"] == "connected"
    nats_1 = lab.host("nats-1").address
    assert on_host(lab, "client", "connect", nats_1, "4222", "2")["outcome"] == "connected"

    lab.faults.heal(cut)
    assert on_host(lab, "client", "connect", db, "5432", "2")["outcome"] == "connected"
    assert cut.event.end is not None
    assert cut.event.end > cut.event.start


async def test_a_partition_held_for_a_while_heals_by_itself(lab: Lab) -> None:
    cut = lab.faults.partition("spare", ["db"])
    await lab.faults.hold(lambda: lab.faults.heal(cut), 0.5)
    assert cut.healed
    assert cut.event.end is not None
    assert cut.event.end - cut.event.start >= 0.5
    db = lab.host("db").address
    assert on_host(lab, "spare", "connect", db, "5432", "2")["outcome"] == "connected"


def test_added_latency_shows_on_an_open_connection_and_goes_away(lab: Lab) -> None:
    spare = lab.host("spare").address
    server = lab.spawn("spare", "echo", [sys.executable, HOSTCLIENT, "echo-server", spare, "7000"])
    server.wait_for_output("listening")
    with session_on_host(lab, "client", "rtt", spare, "7000", "20") as rtt:
        before = rtt.answer()["median_ms"]
        shaping = lab.faults.shape("client", delay_ms=40, peers=["spare"])
        during = rtt.again()["median_ms"]
        lab.faults.clear(shaping)
        after = rtt.again()["median_ms"]
    assert before < 30
    assert 40 <= during < 40 + 50, (before, during, after)
    assert after < 30


def test_added_loss_drops_about_that_share_of_packets(lab: Lab) -> None:
    spare = lab.host("spare").address
    shaping = lab.faults.shape("client", loss=0.5, peers=["spare"])
    try:
        lost = on_host(lab, "client", "udp-loss", spare, "7000", "300")["lost"]
    finally:
        lab.faults.clear(shaping)
    assert 0.35 < lost < 0.65
    assert on_host(lab, "client", "udp-loss", spare, "7000", "100")["lost"] == 0


def test_a_host_process_is_killed_with_its_children_and_restarted(lab: Lab) -> None:
    process = lab.process("echo")
    pid = process.pid
    assert pid is not None
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{process.netns}").st_ino
    lab.faults.kill(process)
    assert not process.alive
    spare = lab.host("spare").address
    assert on_host(lab, "client", "connect", spare, "7000", "2")["outcome"].startswith("error")
    lab.faults.start(process)
    process.wait_for_output("listening")
    assert on_host(lab, "client", "connect", spare, "7000", "2")["outcome"] == "connected"


def test_stopping_the_lab_leaves_no_namespace_link_process_or_directory(lab: Lab) -> None:
    assert lab.network is not None
    tag, pids = lab.network.tag, [p.pid for h in lab.network for p in h.processes]
    assert len(pids) >= 5  # PostgreSQL, three NATS nodes, the echo server
    lab.stop()
    assert lab.leftovers() == []
    assert not (RUNTIME_ROOT / tag).exists()
    listed = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert tag not in listed
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
