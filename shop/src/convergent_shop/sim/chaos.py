"""Faults the drill inflicts: SIGKILLed workers and relay, a PostgreSQL restart, a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field

from convergent_shop.sim.processes import Cluster

__all__ = ["BROKER_START", "BROKER_STOP", "PG_RESTART", "Chaos"]

log = logging.getLogger(__name__)

PG_RESTART = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart"
BROKER_STOP = "start-stop-daemon --stop --oknodo --retry 5 --exec /usr/sbin/nats-server"
BROKER_START = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)


async def _shell(command: str) -> int:
    process = await asyncio.create_subprocess_shell(
        command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


@dataclass
class Chaos:
    """A loop (``run(stop)``) spreading ``kills`` SIGKILLs over ``duration`` seconds."""

    cluster: Cluster
    duration: float
    kills: int = 0
    pg_restart: bool = False
    broker_outage: float = 0.0  # seconds the broker stays down; 0 = no outage
    seed: int | None = None
    events: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        plan: list[tuple[float, str]] = [
            (rng.uniform(0.1, 0.9) * self.duration, "kill") for _ in range(self.kills)
        ]
        if self.pg_restart:
            plan.append((0.5 * self.duration, "pg"))
        if self.broker_outage:
            plan.append((0.3 * self.duration, "broker"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        for at, what in sorted(plan):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, started + at - loop.time()))
            if stop.is_set():
                return
            await self._do(what, rng)

    async def _do(self, what: str, rng: random.Random) -> None:
        if what == "kill":
            victims = [m for m in self.cluster.killable if m.alive]
            if not victims:
                self.events.append("kill skipped: no worker or relay running")
                return
            victim = rng.choice(victims)
            victim.kill()
            self.events.append(f"SIGKILL {victim.name}")
        elif what == "pg":
            code = await _shell(PG_RESTART)
            self.events.append(f"PostgreSQL restart (exit {code})")
        elif what == "broker":
            await _shell(BROKER_STOP)
            self.events.append(f"broker down for {self.broker_outage}s")
            await asyncio.sleep(self.broker_outage)  # the outage itself, not a synchronisation
            code = await _shell(BROKER_START)
            self.events.append(f"broker back (exit {code})")
