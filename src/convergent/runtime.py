"""The background loops a convergent process runs, assembled in ONE place.

`convergent worker`, `convergent relay`, `convergent consume`, the FastAPI lifespan
(`convergent.http.lifespan`) and the reference shop all build their loops with `standard_loops`;
each flag leaves out what another process runs instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from convergent.loops import Loop
from convergent.maintenance import Maintenance
from convergent.outbox.consumer import CONSUMERS, Consumer
from convergent.outbox.relay import Relay
from convergent.store import Store
from convergent.telemetry import StoreGauges
from convergent.transports import transport_from_url
from convergent.workflows import Worker
from convergent.workflows.children import ChildWaker
from convergent.workflows.schedules import Scheduler

__all__ = ["LoopOptions", "Messaging", "standard_loops"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopOptions:
    """Which loops run in this process, and how."""

    workflows: bool = True
    #: fires the ticks of the schedules declared in the imported modules (with ``workflows``)
    schedules: bool = True
    #: queue name -> runs of that queue held at once (None: the default queue at `concurrency`)
    queues: dict[str, int] | None = None
    concurrency: int = 50
    lease_seconds: float = 30.0
    poll_interval: float = 1.0
    relay: bool = True
    relay_batch_size: int = 1000
    #: every consumer declared with ``@consumer`` in the imported modules
    consumers: bool = True
    webhooks: bool = True
    #: retention and compaction (`convergent.maintenance`: idempotency keys, inbox, replies,
    #: finished runs, webhook deliveries, the embedded log)
    maintenance: bool = True
    #: samples backlogs and states into Prometheus gauges
    gauges: bool = True
    extra: tuple[Loop, ...] = field(default=())


def standard_loops(
    store: Store, broker_url: str | None = None, options: LoopOptions | None = None
) -> list[Loop]:
    """The loops ``options`` asks for, on ``store`` and the broker at ``broker_url``."""
    options = options or LoopOptions()
    loops: list[Loop] = list(options.extra)
    if options.workflows:
        loops.append(
            Worker(
                store,
                queues=options.queues,
                concurrency=options.concurrency,
                lease_seconds=options.lease_seconds,
                poll_interval=options.poll_interval,
            )
        )
        if options.schedules:
            loops.append(Scheduler(store, poll_interval=options.poll_interval))
        loops.append(ChildWaker(store, poll_interval=options.poll_interval))
    if options.relay or (options.consumers and CONSUMERS):
        loops.append(
            Messaging(
                store,
                broker_url,
                relay=options.relay,
                consumers=options.consumers,
                relay_batch_size=options.relay_batch_size,
                poll_interval=min(options.poll_interval, 0.5),
            )
        )
    if options.webhooks:
        from convergent.webhooks import Dispatcher  # needs the `http` extra only when used

        loops.append(Dispatcher(store))
    if options.maintenance:
        loops.append(Maintenance(store))
    if options.gauges:
        loops.append(StoreGauges(store))
    return loops


@dataclass
class Messaging:
    """The outbox relay and the declared consumers, sharing one transport."""

    store: Store
    broker_url: str | None
    relay: bool = True
    consumers: bool = True
    relay_batch_size: int = 1000
    poll_interval: float = 0.5
    members: list[Relay | Consumer] = field(default_factory=list)

    @property
    def published(self) -> int:
        return sum(m.published for m in self.members if isinstance(m, Relay))

    @property
    def handled(self) -> int:
        return sum(m.handled for m in self.members if isinstance(m, Consumer))

    async def run(self, stop: asyncio.Event) -> None:
        transport = transport_from_url(self.broker_url, self.store)
        self.members = []
        if self.relay:
            self.members.append(
                Relay(
                    self.store,
                    transport,
                    batch_size=self.relay_batch_size,
                    poll_interval=self.poll_interval,
                )
            )
        if self.consumers:
            self.members += [Consumer.from_spec(self.store, transport, s) for s in CONSUMERS]
        try:
            await asyncio.gather(*(each.run(stop) for each in self.members))
        finally:
            await transport.close()


def parse_queues(specs: Iterable[str], concurrency: int) -> dict[str, int] | None:
    """``["default", "emails=4"]`` -> ``{"default": concurrency, "emails": 4}``."""
    limits: dict[str, int] = {}
    for spec in specs:
        name, _, limit = spec.partition("=")
        limits[name] = int(limit) if limit else concurrency
    return limits or None
