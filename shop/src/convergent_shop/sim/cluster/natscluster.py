"""A NATS JetStream cluster, one node per host: routes between all nodes, a store per node.

Ready means what the shop needs: a stream of ``replicas`` replicas can be created and takes a
publish, through convergent's own NATS transport, from the controller's address on the bridge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx

from convergent.messages import Message
from convergent.outbox.topics import Topic
from convergent.transports.nats import NatsTransport
from convergent_shop.sim.cluster.network import Host
from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import LabError

__all__ = ["NATS_SERVER", "NatsCluster", "NatsNode", "in_thread"]

NATS_SERVER = Path("/usr/sbin/nats-server")
CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222


def in_thread(coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """Run ``coro`` on an event loop of its own, callable from sync and async code alike."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout)


class NatsNode:
    def __init__(
        self, host: Host, name: str, cluster: str, peers: list[str], workdir: Path, log: Path
    ) -> None:
        self.host, self.name = host, name
        self.store_dir = workdir / name
        self.config = workdir / f"{name}.conf"
        routes = [f"nats-route://{address}:{ROUTE_PORT}" for address in peers]
        # JSON is valid NATS configuration syntax
        settings = {
            "server_name": name,
            "listen": f"{host.address}:{CLIENT_PORT}",
            "http": f"{host.address}:{MONITOR_PORT}",
            "jetstream": {
                "store_dir": str(self.store_dir),
                "max_memory_store": 256 << 20,
                "max_file_store": 2 << 30,
            },
            "cluster": {
                "name": cluster,
                "listen": f"{host.address}:{ROUTE_PORT}",
                "routes": routes,
            },
        }
        self.config.write_text(json.dumps(settings, indent=2))
        argv = [str(NATS_SERVER), "-c", str(self.config)]
        self.process: HostProcess = host.spawn(name, argv, log, start=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host.address}:{CLIENT_PORT}"

    def healthy(self) -> bool:
        try:
            answer = httpx.get(f"http://{self.host.address}:{MONITOR_PORT}/healthz", timeout=1)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if not self.process.alive:
                raise LabError(f"{self.name} exited; see {self.process.log}")
            if time.monotonic() > deadline:
                raise LabError(f"{self.name} not healthy in {timeout}s; see {self.process.log}")
            time.sleep(0.1)


class NatsCluster:
    def __init__(self, hosts: list[Host], workdir: Path, log_dir: Path, name: str) -> None:
        if not NATS_SERVER.exists():
            raise LabError(f"no nats-server at {NATS_SERVER} (apt-get install nats-server)")
        workdir.mkdir(parents=True, exist_ok=True)
        addresses = [h.address for h in hosts]
        self.nodes = [
            NatsNode(
                host,
                host.name,
                name,
                [a for a in addresses if a != host.address],
                workdir,
                log_dir / f"{host.name}.log",
            )
            for host in hosts
        ]

    @property
    def replicas(self) -> int:
        return len(self.nodes)

    def url(self, replicas: int | None = None) -> str:
        """The broker URL for the shop: every node a seed, streams of ``replicas`` replicas."""
        seeds = ",".join(node.url for node in self.nodes)
        return f"{seeds}?replicas={replicas or self.replicas}"

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            shutil.rmtree(node.store_dir, ignore_errors=True)
            node.process.start()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            node.wait_healthy(max(deadline - time.monotonic(), 0.1))
        self.wait_replicated(max(deadline - time.monotonic(), 1.0))

    def wait_replicated(self, timeout: float = 30.0) -> None:
        """Until a stream of full replicas can be created and published to."""
        in_thread(_probe(self.url(), timeout), timeout + 10)

    def stop_node(self, name: str) -> None:
        """A clean shutdown of one node (SIGTERM)."""
        self.node(name).process.stop()

    def kill_node(self, name: str) -> None:
        self.node(name).process.kill()

    def start_node(self, name: str, timeout: float = 30.0) -> None:
        """Bring a stopped node back with its store; wait until it reports healthy."""
        node = self.node(name)
        node.process.start()
        node.wait_healthy(timeout)


async def _probe(url: str, timeout: float) -> None:
    topic = Topic(f"cvlab-probe-{uuid.uuid4().hex[:8]}")
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        transport = NatsTransport(url, connect_timeout=2)
        try:
            await transport.ensure_topic(topic)
            [error] = await transport.publish([Message(topic.name, "k", "probe", {})])
            if error is None:
                await transport.delete_topic(topic.name)
                return
            last = error
        except Exception as exc:  # a cluster electing its leaders answers with many kinds
            last = exc
        finally:
            try:
                await asyncio.wait_for(transport.close(), 2)
            except Exception as exc:  # a half-open connection cannot drain; it is dropped anyway
                last = last or exc
        await asyncio.sleep(0.2)
    raise LabError(f"no {url.rsplit('=', 1)[-1]}-replica stream in {timeout}s: {last!r}")
