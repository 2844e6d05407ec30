"""Faults the drill inflicts: SIGKILLed workers and relay, a PostgreSQL restart, a broker outage.

The restart and the outage act on servers the drill started itself (`sim.services`), never on
the machine's shared PostgreSQL or nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field

from convergent_shop.sim.processes import Cluster
from convergent_shop.sim.services import LocalNats, LocalPostgres, ServiceError

__all__ = ["Chaos"]

log = logging.getLogger(__name__)


@dataclass
class Chaos:
    """A loop (``run(stop)``) spreading ``kills`` SIGKILLs over ``duration`` seconds."""

    cluster: Cluster
    duration: float
    kills: int = 0
    database: LocalPostgres | None = None  # restarted mid-round when given
    broker: LocalNats | None = None  # stopped for ``broker_outage`` seconds when given
    broker_outage: float = 0.0
    seed: int | None = None
    events: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed)
        plan: list[tuple[float, str]] = [
            (rng.uniform(0.1, 0.9) * self.duration, "kill") for _ in range(self.kills)
        ]
        if self.database is not None:
            plan.append((0.5 * self.duration, "pg"))
        if self.broker is not None and self.broker_outage:
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
        elif what == "pg" and self.database is not None:
            try:
                await self.database.restart()
                self.events.append("PostgreSQL restart (fast shutdown, start)")
            except ServiceError as exc:
                self.events.append(f"PostgreSQL restart failed: {exc}")
        elif what == "broker" and self.broker is not None:
            await self.broker.stop()
            self.events.append(f"broker down for {self.broker_outage}s")
            await asyncio.sleep(self.broker_outage)  # the outage itself, not a synchronisation
            try:
                await self.broker.start()
                self.events.append("broker back")
            except ServiceError as exc:
                self.events.append(f"broker did not come back: {exc}")
