"""Running ``ip``/``tc`` and probing what this kernel lets the harness do.

Every failure is one line naming the command and what it said, never a traceback of
``CalledProcessError``: the drill prints it and carries on with what the machine can do.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass

__all__ = [
    "Capabilities",
    "LabError",
    "Unsupported",
    "capabilities",
    "drop_filter",
    "drop_setup",
    "run",
    "sh",
]


class LabError(RuntimeError):
    """A harness command failed; the message is one line."""


class Unsupported(LabError):
    """This machine cannot inject that fault (a kernel feature or a tool is missing)."""


def run(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run one command, output captured; on failure a ``LabError`` naming it."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from None
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)}: {said[0] if said else f'exit {done.returncode}'}")
    return done


def sh(command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``run`` for a command line of plain words (names and addresses never hold spaces)."""
    return run(*command.split(), check=check)


@dataclass(frozen=True)
class Capabilities:
    """What the harness can do here; ``missing`` says, one line each, what it cannot."""

    netns: bool  # namespaces, veth pairs, a bridge: without them there is no cluster at all
    partition: bool  # per-peer drops in the bridge ports (tc htb + u32 + pfifo)
    netem: bool  # tc netem for latency and loss
    tun: bool  # /dev/net/tun for the userspace delay line (latency and loss without netem)
    missing: tuple[str, ...]

    @property
    def shaping(self) -> bool:
        """Latency and loss can be added, by netem or by the delay line."""
        return self.netem or self.tun


def _cap_net_admin() -> bool:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 12))
    return False


def drop_setup(dev: str) -> list[str]:
    """tc commands giving ``dev`` a class ``1:2`` that drops every packet sent to it."""
    return [
        f"tc qdisc add dev {dev} root handle 1: htb",
        f"tc class add dev {dev} parent 1: classid 1:2 htb rate 1mbit quantum 1514",
        f"tc qdisc add dev {dev} parent 1:2 handle 2: pfifo limit 0",  # a queue of 0 drops all
    ]


def drop_filter(dev: str, prio: int, match: str) -> str:
    """Send the packets ``match``ing (e.g. ``ip src 10.77.1.2/32``) to the dropping class."""
    return f"tc filter add dev {dev} parent 1: protocol ip prio {prio} u32 match {match} flowid 1:2"


def _probe_qdiscs(ns: str, dev: str) -> tuple[bool, bool]:
    """(per-peer drops, netem) on a veth inside the probe namespace."""
    inside = f"ip netns exec {ns} "
    netem = sh(inside + f"tc qdisc add dev {dev} root netem delay 1ms", check=False).returncode
    sh(inside + f"tc qdisc del dev {dev} root", check=False)
    steps = [*drop_setup(dev), drop_filter(dev, 1, "ip src 10.77.0.1/32")]
    partition = all(sh(inside + step, check=False).returncode == 0 for step in steps)
    return partition, netem == 0


@functools.cache
def capabilities() -> Capabilities:
    """Probe once per process in a throwaway namespace of its own."""
    missing: list[str] = []
    tools = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if tools:
        missing.append(f"no {' or '.join(tools)} command (install iproute2): no cluster")
        return Capabilities(False, False, False, False, tuple(missing))
    if os.geteuid() != 0 or not _cap_net_admin():
        missing.append("not root with CAP_NET_ADMIN: cannot create network namespaces")
        return Capabilities(False, False, False, False, tuple(missing))
    ns = f"cvlprobe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    dev = f"cvq{uuid.uuid4().hex[:8]}"
    try:
        made = run("ip", "netns", "add", ns, check=False)
        if made.returncode != 0:
            missing.append(f"ip netns add failed: {made.stderr.strip()}: no cluster")
            return Capabilities(False, False, False, False, tuple(missing))
        pair = ("ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
        veth = run(*pair, check=False)
        bridge = run("ip", "link", "add", f"{dev}b", "type", "bridge", check=False)
        run("ip", "link", "del", f"{dev}b", check=False)
        if veth.returncode != 0 or bridge.returncode != 0:
            said = (veth.stderr or bridge.stderr).strip()
            missing.append(f"cannot create veth pairs or bridges ({said}): no cluster")
            return Capabilities(False, False, False, False, tuple(missing))
        partition, netem = _probe_qdiscs(ns, "eth0")
    finally:
        run("ip", "link", "del", dev, check=False)
        run("ip", "netns", "del", ns, check=False)
    tun = os.path.exists("/dev/net/tun")
    if not partition:
        missing.append("kernel lacks tc htb/u32/pfifo: partitions cut a host's whole link")
    if not netem and tun:
        missing.append("kernel lacks sch_netem: latency and loss go through a userspace delay line")
    elif not netem:
        missing.append("kernel lacks sch_netem and /dev/net/tun: no latency or loss faults")
    return Capabilities(True, partition, netem, tun, tuple(missing))
