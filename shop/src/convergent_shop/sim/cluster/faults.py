"""Faults between hosts, each with its way back, each recorded on the lab's time axis.

* ``partition(host, peers)``: the switch (the bridge ports, in the root namespace) drops every
  IPv4 packet between ``host`` and ``peers`` both ways, silently, as a cut cable between
  switches would: connections hang and time out, nothing is refused. ``heal()`` lets them through.
  Without tc htb/u32 in the kernel the host's port goes down instead (cut from everyone).
* ``shape(host, delay_ms, loss, peers)``: latency and loss on what ``host`` sends to ``peers``
  (``tc netem``; without it, the userspace delay line). ``clear()`` removes it.
* ``kill``/``start`` of any host process; the lab adds NATS nodes and the database on top.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from convergent_shop.sim.cluster import delayline
from convergent_shop.sim.cluster.delayline import MARK
from convergent_shop.sim.cluster.network import Host, Network
from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import (
    Capabilities,
    Unsupported,
    drop_filter,
    drop_setup,
    sh,
)

__all__ = ["FaultEvent", "Faults", "Partition", "Shaping"]

_TUN = "cvdelay"
_TABLE = "77"


@dataclass
class FaultEvent:
    """One fault: what, on which target, from ``start`` to ``end`` (seconds since the lab began)."""

    kind: str
    target: str
    detail: str
    start: float
    end: float | None = None


@dataclass
class Partition:
    host: Host
    peers: list[Host | str]  # a Host, or the controller's address
    event: FaultEvent
    healed: bool = False


@dataclass
class Shaping:
    host: Host
    delay_ms: float
    loss: float
    peers: list[str]  # addresses
    method: str  # "netem" or "delay line"
    event: FaultEvent
    line: HostProcess | None = None
    cleared: bool = False


@dataclass
class Faults:
    network: Network
    capabilities: Capabilities
    log_dir: Path
    origin: float = field(default_factory=time.monotonic)
    events: list[FaultEvent] = field(default_factory=list)
    _blocked: dict[str, Counter[str]] = field(default_factory=dict)  # port -> sources dropped
    _filter_prio: dict[str, int] = field(default_factory=dict)
    _down: Counter[str] = field(default_factory=Counter)
    _shaped: dict[str, Shaping] = field(default_factory=dict)
    _partitions: list[Partition] = field(default_factory=list)

    def now(self) -> float:
        return round(time.monotonic() - self.origin, 3)

    def record(self, kind: str, target: str, detail: str = "") -> FaultEvent:
        event = FaultEvent(kind, target, detail, self.now())
        self.events.append(event)
        return event

    def end(self, event: FaultEvent) -> None:
        event.end = self.now()

    # processes

    def kill(self, process: HostProcess) -> FaultEvent:
        """SIGKILL a process (and its children); an instant on the time axis."""
        event = self.record("kill", process.name, f"pid {process.pid}")
        process.kill()
        event.end = event.start
        return event

    def start(self, process: HostProcess) -> None:
        process.start()
        self.end(self.record("start", process.name, f"pid {process.pid}"))

    # partitions

    def _address(self, peer: Host | str) -> str:
        return peer.address if isinstance(peer, Host) else peer

    def _apply_port(self, port: str) -> None:
        """Make ``port``'s drop filters match its current set of blocked sources, gaplessly."""
        sources = [a for a, n in self._blocked.get(port, Counter()).items() if n > 0]
        old = self._filter_prio.get(port)
        if old is None and sources:
            for command in drop_setup(port):
                sh(command)
        prio = (old or 0) % 60000 + 1
        for source in sources:  # the new filters go in before the old ones come out
            sh(drop_filter(port, prio, f"ip src {source}/32"))
        if old is not None:
            sh(f"tc filter del dev {port} parent 1: protocol ip prio {old}", check=False)
        if sources:
            self._filter_prio[port] = prio
        elif old is not None:
            sh(f"tc qdisc del dev {port} root", check=False)
            del self._filter_prio[port]

    def _block(self, port: str, sources: Iterable[str], delta: int) -> None:
        counter = self._blocked.setdefault(port, Counter())
        for source in sources:
            counter[source] += delta
        self._apply_port(port)

    def partition(self, host: str, peers: Iterable[str]) -> Partition:
        """Cut ``host`` from ``peers`` (host names; ``"controller"`` is this process)."""
        cut = self.network.host(host)
        others: list[Host | str] = [
            self.network.controller if p == "controller" else self.network.host(p) for p in peers
        ]
        names = ", ".join(p.name if isinstance(p, Host) else "controller" for p in others)
        if self.capabilities.partition:
            self._block(cut.port, [self._address(p) for p in others], +1)
            for peer in others:
                if isinstance(peer, Host):
                    self._block(peer.port, [cut.address], +1)
            # the host's packets to the controller end in the bridge device, past every port's
            # egress: that direction stays open, the controller's packets to the host do not
            detail = f"from {names}"
        else:
            self._down[cut.port] += 1
            sh(f"ip link set {cut.port} down")
            detail = f"from everyone (link down; kernel lacks tc htb/u32), asked: {names}"
        partition = Partition(cut, others, self.record("partition", host, detail))
        self._partitions.append(partition)
        return partition

    def heal(self, partition: Partition) -> None:
        if partition.healed:
            return
        partition.healed = True
        cut = partition.host
        if self.capabilities.partition:
            self._block(cut.port, [self._address(p) for p in partition.peers], -1)
            for peer in partition.peers:
                if isinstance(peer, Host):
                    self._block(peer.port, [cut.address], -1)
        else:
            self._down[cut.port] -= 1
            if self._down[cut.port] == 0:
                sh(f"ip link set {cut.port} up")
        self.end(partition.event)

    # latency and loss

    def shape(
        self,
        host: str,
        *,
        delay_ms: float = 0.0,
        loss: float = 0.0,
        peers: Iterable[str] | None = None,
    ) -> Shaping:
        """Delay (ms) and lose (0..1) what ``host`` sends to ``peers`` (default: every host)."""
        shaped = self.network.host(host)
        if not self.capabilities.shaping:
            raise Unsupported("kernel lacks sch_netem and /dev/net/tun: no latency or loss faults")
        if not 0 <= loss <= 1 or delay_ms < 0:
            raise ValueError("delay_ms must be >= 0 and loss between 0 and 1")
        if host in self._shaped:
            self.clear(self._shaped[host])
        names = [h.name for h in self.network if h.name != host] if peers is None else list(peers)
        addresses = [
            self.network.controller if n == "controller" else self.network.host(n).address
            for n in names
        ]
        method = "netem" if self.capabilities.netem else "delay line"
        detail = f"+{delay_ms:g} ms, {loss:.0%} loss to {', '.join(names)} ({method})"
        shaping = Shaping(
            shaped, delay_ms, loss, addresses, method, self.record("shape", host, detail)
        )
        if method == "netem":
            self._netem(shaping)
        else:
            self._delay_line(shaping)
        self._shaped[host] = shaping
        return shaping

    def _netem(self, s: Shaping) -> None:
        inside = f"ip netns exec {s.host.netns} "
        sh(inside + "tc qdisc add dev eth0 root handle 1: htb")
        sh(inside + "tc class add dev eth0 parent 1: classid 1:1 htb rate 10gbit")
        sh(
            inside + f"tc qdisc add dev eth0 parent 1:1 handle 10: netem delay {s.delay_ms}ms "
            f"loss {s.loss * 100}%"
        )
        for address in s.peers:
            sh(
                inside + "tc filter add dev eth0 parent 1: protocol ip prio 1 u32 "
                f"match ip dst {address}/32 flowid 1:1"
            )

    def _delay_line(self, s: Shaping) -> None:
        h, inside = s.host, f"ip netns exec {s.host.netns} "
        sh(inside + f"ip tuntap add dev {_TUN} mode tun")
        sh(inside + f"ip link set {_TUN} up")
        sh(inside + f"ip rule add fwmark {MARK:#x} lookup {_TABLE}")
        sh(inside + f"ip route add {self.network.subnet}.0/24 dev eth0 table {_TABLE}")
        # by path (-P: not its directory on sys.path either): stdlib only, starts in a blink
        argv = [sys.executable, "-P", delayline.__file__, "--dev", _TUN]
        argv += ["--delay-ms", str(s.delay_ms), "--loss", str(s.loss)]
        s.line = h.spawn(f"delayline-{h.name}", argv, self.log_dir / f"delayline-{h.name}.log")
        s.line.wait_for_output("ready", timeout=30)
        for address in s.peers:  # only now: a tun nobody reads would drop these packets
            sh(inside + f"ip route add {address}/32 dev {_TUN} src {h.address}")

    def clear(self, shaping: Shaping) -> None:
        if shaping.cleared:
            return
        shaping.cleared = True
        h, inside = shaping.host, f"ip netns exec {shaping.host.netns} "
        if shaping.method == "netem":
            sh(inside + "tc qdisc del dev eth0 root", check=False)
        else:
            sh(inside + f"ip route flush dev {_TUN}", check=False)  # traffic back onto eth0
            if shaping.line is not None:
                shaping.line.kill()
                h.processes.remove(shaping.line)
            sh(inside + f"ip tuntap del dev {_TUN} mode tun", check=False)
            sh(inside + f"ip rule del fwmark {MARK:#x} lookup {_TABLE}", check=False)
            sh(inside + f"ip route flush table {_TABLE}", check=False)
        self._shaped.pop(h.name, None)
        self.end(shaping.event)

    # everything back

    def heal_all(self) -> None:
        for partition in self._partitions:
            self.heal(partition)
        for shaping in list(self._shaped.values()):
            self.clear(shaping)

    async def hold(self, undo: Callable[[], None], seconds: float) -> None:
        """Keep a fault for ``seconds`` (without blocking the event loop), then undo it."""
        try:
            await asyncio.sleep(seconds)
        finally:
            undo()
