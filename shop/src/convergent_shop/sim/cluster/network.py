"""Hosts from network namespaces: one bridge, a veth pair per host, a private /24.

Every name carries the owner's pid and a sequence number (``cvl`` + 5 + 2 base-36 digits), so
parallel runs never collide and a later run can tell a dead run's leftovers (namespaces, bridge
ports, processes inside them, the runtime directory) from a live one's and remove them. The
controller (this process, in the root namespace) has ``.254`` on the bridge, like an operator's
machine on the same network; hosts have ``eth0`` and no route beyond the /24.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import LabError, run

__all__ = ["RUNTIME_ROOT", "Host", "Network", "sweep_stale"]

RUNTIME_ROOT = Path("/tmp/convergent-lab")
_PREFIX = "cvl"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_TAG = re.compile(rf"^{_PREFIX}([0-9a-z]{{5}})([0-9a-z]{{2}})")
_PROBE = re.compile(r"^cvlprobe-(\d+)-")
_sequence = itertools.count()


def _b36(n: int, width: int) -> str:
    out = ""
    for _ in range(width):
        n, digit = divmod(n, 36)
        out = _DIGITS[digit] + out
    return out


def _owner(name: str) -> int | None:
    """The pid that created a resource named ``name``, or None if it is not ours."""
    if match := _TAG.match(name):
        return int(match.group(1), 36)
    if match := _PROBE.match(name):
        return int(match.group(1))
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines() if line]


def _links() -> list[str]:
    names = []
    for line in run("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        names.append(name)
    return names


def _ns_pids(netns: str) -> list[int]:
    done = run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in done.stdout.split()]


def _empty_namespace(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process left in ``netns`` (they are all the harness's) and wait."""
    deadline = time.monotonic() + timeout
    while pids := _ns_pids(netns):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"processes {pids} in namespace {netns} did not die")
        time.sleep(0.05)


def _remove_namespace(netns: str) -> None:
    _empty_namespace(netns)
    run("ip", "netns", "del", netns, check=False)


def sweep_stale() -> list[str]:
    """Remove what runs whose owner process is gone left behind; return what was removed."""
    removed = []
    for netns in _namespaces():
        pid = _owner(netns)
        if pid is not None and not _alive(pid):
            _remove_namespace(netns)
            removed.append(f"namespace {netns}")
    for link in _links():
        pid = _owner(link)
        if pid is not None and not _alive(pid):
            run("ip", "link", "del", link, check=False)
            removed.append(f"link {link}")
    if RUNTIME_ROOT.is_dir():
        for path in RUNTIME_ROOT.iterdir():
            pid = _owner(path.name)
            if pid is not None and not _alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(f"directory {path}")
    return removed


@dataclass
class Host:
    """One machine: a namespace with ``eth0`` at ``address`` on the lab's bridge."""

    name: str
    netns: str
    address: str
    port: str  # the bridge side of its veth pair, in the root namespace (the switch port)
    processes: list[HostProcess] = field(default_factory=list)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 60.0) -> str:
        """Run a command on this host to completion; its standard output."""
        return run(*self.argv(*argv), check=check, timeout=timeout).stdout

    def spawn(
        self,
        name: str,
        argv: list[str],
        log: Path,
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        start: bool = True,
    ) -> HostProcess:
        """A restartable process on this host (``start=False`` to only prepare it)."""
        process = HostProcess(name, self.netns, argv, log, dict(env or os.environ), user)
        self.processes.append(process)
        if start:
            process.start()
        return process


class Network:
    """The bridge and its hosts; ``close()`` removes all of it and every process in it."""

    def __init__(self) -> None:
        sweep_stale()
        self.tag = f"{_PREFIX}{_b36(os.getpid(), 5)}{_b36(next(_sequence), 2)}"
        self.bridge = f"{self.tag}br"
        self.runtime_dir = RUNTIME_ROOT / self.tag  # data directories; removed with the network
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, Host] = {}
        self.subnet = self._create_bridge()
        self.controller = f"{self.subnet}.254"

    def _create_bridge(self) -> str:
        """A /24 under 10.77/16 no other run holds, taken under a lock shared by all runs."""
        RUNTIME_ROOT.mkdir(parents=True, exist_ok=True)
        with (RUNTIME_ROOT / ".subnets.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = set(re.findall(r"inet 10\.77\.(\d+)\.", run("ip", "-o", "-4", "addr").stdout))
            free = [n for n in range(1, 255) if str(n) not in taken]
            if not free:
                raise LabError("every 10.77.N.0/24 is taken by another run's bridge")
            subnet = f"10.77.{free[0]}"
            run("ip", "link", "add", self.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{subnet}.254/24", "dev", self.bridge)
            run("ip", "link", "set", self.bridge, "up")
        return subnet

    def add_host(self, name: str, octet: int) -> Host:
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name) or name in self.hosts:
            raise LabError(f"host name {name!r} is taken or not [a-z][a-z0-9-]*")
        netns = f"{self.tag}-{name}"
        port = f"{self.tag}p{len(self.hosts):02d}"
        address = f"{self.subnet}.{octet}"
        host = Host(name, netns, address, port)
        self.hosts[name] = host  # before anything exists, so close() removes a half-made host
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", port, "master", self.bridge, "up")
        run("ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up")
        run("ip", "netns", "exec", netns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        run("ip", "netns", "exec", netns, "ip", "link", "set", "eth0", "up")
        return host

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(f"no host {name!r}; hosts: {', '.join(self.hosts)}") from None

    def by_address(self, address: str) -> Host:
        return next(h for h in self.hosts.values() if h.address == address)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def leftovers(self) -> list[str]:
        """Namespaces, links and processes of this network that still exist."""
        found = [f"namespace {n}" for n in _namespaces() if n.startswith(self.tag)]
        found += [f"link {n}" for n in _links() if n.startswith(self.tag)]
        for host in self.hosts.values():
            found += [f"process {p.name} ({p.pid})" for p in host.processes if p.alive]
        return found

    def close(self, timeout: float = 10.0) -> None:
        """Stop every process, remove the namespaces and the bridge, wait until they are gone."""
        for host in self.hosts.values():
            for process in host.processes:
                process.kill()
            _remove_namespace(host.netns)
        run("ip", "link", "del", self.bridge, check=False)
        for host in self.hosts.values():  # a port whose namespace never got its other end
            run("ip", "link", "del", host.port, check=False)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        deadline = time.monotonic() + timeout
        while left := self.leftovers():  # veth pairs go asynchronously after their namespace
            if time.monotonic() > deadline:
                raise LabError(f"left behind after close: {', '.join(left)}")
            time.sleep(0.05)
