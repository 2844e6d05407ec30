"""The lab: a database host, a NATS JetStream cluster and named empty hosts, on one bridge.

    with Lab(["api", "relay", "worker-0", "worker-1"], log_dir=report_dir) as lab:
        worker = lab.spawn("worker-0", "worker-0", [sys.executable, "-m", "convergent", "worker"])
        partition = lab.faults.partition("worker-0", ["db", *lab.nats_hosts])
        ...
        lab.faults.heal(partition)

Blocking calls (the slow one is ``start()``, a few seconds); from async code run ``start`` and
``stop`` through ``asyncio.to_thread``. The fault methods take milliseconds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from convergent_shop.sim.cluster.faults import FaultEvent, Faults
from convergent_shop.sim.cluster.network import Host, Network
from convergent_shop.sim.cluster.postgres import PostgresServer
from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import LabError, Unsupported, capabilities

if TYPE_CHECKING:  # imported when a lab has NATS nodes: it brings convergent and SQLAlchemy
    from convergent_shop.sim.cluster.natscluster import NatsCluster

__all__ = ["DB_HOST", "Lab", "exit_on_sigterm"]

DB_HOST = "db"
_DB_OCTET, _NATS_OCTET, _HOST_OCTET = 2, 11, 21


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so the lab's ``with`` block removes what it made."""

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


class Lab:
    def __init__(
        self,
        hosts: Sequence[str] = ("client",),
        *,
        log_dir: Path | None = None,
        nats_nodes: int = 3,
        postgres: bool = True,
        database: str = "convergent",
    ) -> None:
        self.host_names = list(hosts)
        self.nats_nodes, self.with_postgres, self.database = nats_nodes, postgres, database
        self._log_dir = log_dir
        self.notices: list[str] = []  # one line per thing this machine cannot do
        self.network: Network | None = None
        self.db: PostgresServer | None = None
        self.nats: NatsCluster | None = None
        self._faults: Faults | None = None
        self.database_url = ""
        self.broker_url = ""

    # lifecycle

    def start(self, timeout: float = 90.0) -> Lab:
        caps = capabilities()
        self.notices = list(caps.missing)
        if not caps.netns:
            raise Unsupported(caps.missing[0])
        began = time.monotonic()
        self.network = network = Network()
        try:
            log_dir = self.log_dir
            log_dir.mkdir(parents=True, exist_ok=True)
            self._faults = Faults(network, caps, log_dir)
            if self.with_postgres:
                db_host = network.add_host(DB_HOST, _DB_OCTET)
                self.db = PostgresServer(
                    db_host, network.runtime_dir / "db" / "data", log_dir / "postgres.log"
                )
                self.db.init()
                self.db.process.start()  # comes up while the NATS cluster does
            if self.nats_nodes:
                from convergent_shop.sim.cluster.natscluster import NatsCluster

                nats_hosts = [
                    network.add_host(f"nats-{n + 1}", _NATS_OCTET + n)
                    for n in range(self.nats_nodes)
                ]
                self.nats = NatsCluster(
                    nats_hosts, network.runtime_dir / "nats", log_dir, network.tag
                )
            for n, name in enumerate(self.host_names):
                network.add_host(name, _HOST_OCTET + n)
            if self.nats is not None:
                self.nats.start(timeout)
                self.broker_url = self.nats.url()
            if self.db is not None:
                self.db.wait_ready(max(timeout - (time.monotonic() - began), 5.0))
                self.database_url = self.db.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Undo every fault, kill every process, remove every namespace, link and directory."""
        if self._faults is not None:
            self._faults.heal_all()
        if self.network is not None:
            self.network.close()

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # what the drill uses

    @property
    def log_dir(self) -> Path:
        if self._log_dir is not None:
            return self._log_dir
        return self._network.runtime_dir / "logs"

    @property
    def _network(self) -> Network:
        if self.network is None:
            raise LabError("the lab is not started")
        return self.network

    @property
    def faults(self) -> Faults:
        if self._faults is None:
            raise LabError("the lab is not started")
        return self._faults

    @property
    def events(self) -> list[FaultEvent]:
        return self.faults.events

    @property
    def controller(self) -> str:
        """This process's address on the bridge."""
        return self._network.controller

    @property
    def nats_hosts(self) -> list[str]:
        return [node.host.name for node in self.nats.nodes] if self.nats else []

    def host(self, name: str) -> Host:
        return self._network.host(name)

    def spawn(
        self,
        host: str,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> HostProcess:
        """A restartable process on ``host``, its output in ``log_dir/name.log``."""
        return self.host(host).spawn(
            name, argv, self.log_dir / f"{name}.log", env={**os.environ, **(env or {})}, start=start
        )

    def process(self, name: str) -> HostProcess:
        """A process ``spawn``ed (or started by the lab: ``postgres``, ``nats-1``...) by name."""
        for host in self._network:
            for process in host.processes:
                if process.name == name:
                    return process
        raise LabError(f"no process {name!r}")

    def nats_down(self, name: str, *, kill: bool = False) -> FaultEvent:
        """Lose one NATS node (SIGTERM, or SIGKILL with ``kill``); ``nats_up`` ends the event."""
        if self.nats is None:
            raise LabError("this lab has no NATS cluster")
        event = self.faults.record("nats-down", name, "SIGKILL" if kill else "SIGTERM")
        (self.nats.kill_node if kill else self.nats.stop_node)(name)
        return event

    def nats_up(self, name: str, event: FaultEvent | None = None) -> None:
        if self.nats is None:
            raise LabError("this lab has no NATS cluster")
        self.nats.start_node(name)
        if event is not None:
            self.faults.end(event)

    def db_crash(self) -> FaultEvent:
        """SIGKILL PostgreSQL; ``db_restart`` brings it back and ends the event."""
        if self.db is None:
            raise LabError("this lab has no database host")
        event = self.faults.record("db-crash", DB_HOST, "SIGKILL postmaster and backends")
        self.db.kill()
        return event

    def db_restart(self, event: FaultEvent | None = None) -> None:
        if self.db is None:
            raise LabError("this lab has no database host")
        self.db.start()
        if event is not None:
            self.faults.end(event)

    def leftovers(self) -> list[str]:
        return self.network.leftovers() if self.network is not None else []
