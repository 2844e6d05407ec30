"""Several machines on one: network-namespace hosts, a PostgreSQL host, a NATS cluster, faults.

The cluster drill's harness. Linux only, as root (CAP_NET_ADMIN); ``capabilities()`` says in one
line each what this machine cannot do. See ``lab.Lab``.
"""

from convergent_shop.sim.cluster.faults import FaultEvent, Faults, Partition, Shaping
from convergent_shop.sim.cluster.lab import DB_HOST, Lab, exit_on_sigterm
from convergent_shop.sim.cluster.network import Host, Network, sweep_stale
from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import Capabilities, LabError, Unsupported, capabilities

__all__ = [
    "DB_HOST",
    "Capabilities",
    "FaultEvent",
    "Faults",
    "Host",
    "HostProcess",
    "Lab",
    "LabError",
    "Network",
    "Partition",
    "Shaping",
    "Unsupported",
    "capabilities",
    "exit_on_sigterm",
    "sweep_stale",
]
