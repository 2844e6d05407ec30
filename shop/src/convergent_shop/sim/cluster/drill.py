"""``convergent drill --cluster``: the shop deployed on lab hosts, under faults between machines.

The layout (the one docs/deploy.md describes): ``db`` (PostgreSQL), ``nats-1..3`` (a JetStream
cluster, streams of 3 replicas), ``api`` (``convergent serve --no-loops``), ``relay``
(``convergent relay``), ``worker-0..N`` (``convergent worker --no-relay``, a short lease) and
``psp`` (the fake payment provider and exchange). The workload and the checks run on the
controller, as the single-host drill's do.

Faults, on a schedule set by ``duration``: SIGKILLs of shop processes; one NATS node killed and
brought back; ``worker-0`` cut from the database and the broker for longer than a lease, then
healed (fencing keeps it from writing for a run another worker took over); latency and loss on
what ``worker-1`` sends. After the settle, the invariants of ``sim/checks.py`` and, for each fault,
the time from its end until every order accepted before that end was final.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console

from convergent.store import Store
from convergent.webhooks import ALLOW_HOSTS_ENV, AllowList, create_endpoint, new_secret
from convergent_shop.notifications import SECRETS_ENV
from convergent_shop.sim.checks import (
    ORDER_TERMINAL,
    CheckContext,
    CheckResult,
    run_checks,
    table_columns,
)
from convergent_shop.sim.cluster.faults import FaultEvent
from convergent_shop.sim.cluster.lab import Lab
from convergent_shop.sim.cluster.natscluster import MONITOR_PORT
from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import LabError
from convergent_shop.sim.demo import Loop, issue_key, settle, stock_up_catalogue
from convergent_shop.sim.metrics import Sampler, runs_to_look_at, time_to_consistency
from convergent_shop.sim.progress import LiveProgress
from convergent_shop.sim.report import build_report, write_report
from convergent_shop.sim.trades import TradeWorkload
from convergent_shop.sim.workload import Workload, WorkloadConfig
from convergent_shop.trading import FillPoller

__all__ = ["ClusterDrillOptions", "consistency_after", "run_cluster_drill"]

PORT = 8000
_FAULT_KINDS = ("kill", "nats-down", "partition", "shape", "unsupported")


@dataclass
class ClusterDrillOptions:
    report_dir: Path = Path("reports/drill-cluster")
    orders: int = 200
    bookings: int = 20
    trades: int = 5
    workers: int = 2
    kills: int = 4
    fault_rate: float = 0.1
    duration: float = 120.0
    settle_timeout: float = 240.0
    lease_seconds: float = 5.0
    nats_outage: float = 15.0
    delay_ms: float = 40.0
    loss: float = 0.02
    live: bool = True
    seed: int | None = None

    @property
    def partition_seconds(self) -> float:
        """Longer than a lease (three), so another worker surely takes the cut one's runs."""
        return 3 * self.lease_seconds


@dataclass
class Deployment:
    """The shop's processes on the lab's hosts; ``supervise`` restarts any that died."""

    lab: Lab
    options: ClusterDrillOptions
    secret: str
    processes: dict[str, HostProcess] = field(default_factory=dict)

    def url(self, host: str) -> str:
        return f"http://{self.lab.host(host).address}:{PORT}"

    @property
    def api_url(self) -> str:
        return self.url("api")

    @property
    def psp_url(self) -> str:
        return self.url("psp")

    @property
    def workers(self) -> list[str]:
        return [f"worker-{n}" for n in range(self.options.workers)]

    def env(self) -> dict[str, str]:
        network = self.lab.network
        assert network is not None
        return {
            "CONVERGENT_DATABASE_URL": self.lab.database_url,
            "CONVERGENT_BROKER_URL": self.lab.broker_url,
            "CONVERGENT_PSP_URL": self.psp_url,
            ALLOW_HOSTS_ENV: f"{network.subnet}.0/24",
            SECRETS_ENV: self.secret,
        }

    def _spawn(self, host: str, args: list[str], **env: str) -> HostProcess:
        argv = [sys.executable, "-m", "convergent", *args]
        process = self.lab.spawn(host, host, argv, env={**self.env(), **env})
        self.processes[host] = process
        return process

    async def start(self) -> None:
        o = self.options
        rate = str(o.fault_rate)
        psp_db = f"sqlite+aiosqlite:///{(self.lab.log_dir / 'psp.db').resolve()}"
        for stale in self.lab.log_dir.glob("psp.db*"):
            stale.unlink()
        psp = ["psp", "--host", self.lab.host("psp").address, "--port", str(PORT)]
        psp += ["--fault-rate", rate, "--lost-fill-rate", rate, "--duplicate-fill-rate", rate]
        psp += ["--exchange-callback-url", f"{self.api_url}/trading/fills"]
        psp += ["--seed", str(o.seed)] if o.seed is not None else []
        self._spawn("psp", psp, CONVERGENT_PSP_DATABASE_URL=psp_db)
        api = ["serve", "--host", self.lab.host("api").address, "--port", str(PORT)]
        self._spawn("api", [*api, "--no-loops"])
        await asyncio.gather(self.wait_healthy("psp"), self.wait_healthy("api"))
        for name in self.workers:
            worker = ["worker", "--import", "convergent_shop.background", "--no-relay"]
            self._spawn(name, [*worker, "--lease-seconds", str(o.lease_seconds)])
        self._spawn("relay", ["relay"])

    async def wait_healthy(self, host: str, timeout: float = 120.0) -> None:
        process, deadline = self.processes[host], time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if not process.alive:
                    raise LabError(f"{host} exited; see {process.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url(host)}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise LabError(f"{host} did not become healthy in {timeout}s; see {process.log}")

    @property
    def killable(self) -> list[HostProcess]:
        """Workers and the relay. Not the API: the sample receiver lives there, and a receiver
        down for more than 5 s is next called 5 minutes later (the Standard Webhooks schedule),
        longer than a drill waits."""
        return [p for n, p in self.processes.items() if n not in ("psp", "api") and p.alive]

    def lease_losses(self) -> dict[str, int]:
        """Per worker, how often it found its lease taken (fencing stopped its writes)."""
        return {
            name: self.processes[name].log.read_text(errors="replace").count("lost the lease")
            for name in self.workers
        }

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart any shop process that died (SIGKILLed, or gave up while cut off)."""
        while not stop.is_set():
            for process in self.processes.values():
                if not process.alive:
                    process.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    def restarts(self) -> dict[str, int]:
        return {name: p.starts - 1 for name, p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


@dataclass
class Schedule:
    """The faults at fractions of ``duration``, each recorded in the lab's events."""

    lab: Lab
    deployment: Deployment
    options: ClusterDrillOptions
    notes: list[str] = field(default_factory=list)

    def plan(self) -> list[tuple[float, str, Callable[[], Awaitable[None]]]]:
        o = self.options
        rng = random.Random(o.seed)
        plan: list[tuple[float, str, Callable[[], Awaitable[None]]]] = [
            (rng.uniform(0.05, 0.9) * o.duration, "kill", lambda: self.kill(rng))
            for _ in range(o.kills)
        ]
        plan.append((0.15 * o.duration, "nats", self.nats_outage))
        plan.append((0.4 * o.duration, "partition", self.partition))
        plan.append((0.65 * o.duration, "shape", self.shape))
        return sorted(plan, key=lambda p: p[0])

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.TaskGroup() as group:
            for at, _, fault in self.plan():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, started + at - loop.time()))
                if stop.is_set():
                    return
                group.create_task(self._guarded(fault))

    async def _guarded(self, fault: Callable[[], Awaitable[None]]) -> None:
        try:
            await fault()
        except LabError as exc:  # a fault this machine cannot inject: one line, the rest runs
            self.notes.append(str(exc))
            self.lab.faults.end(self.lab.faults.record("unsupported", "-", str(exc)))

    async def kill(self, rng: random.Random) -> None:
        victims = self.deployment.killable
        if victims:
            self.lab.faults.kill(rng.choice(victims))

    async def _meta_leader(self) -> str:
        """The JetStream meta leader (losing it forces an election), else the second node."""
        nodes = self.lab.nats_hosts
        async with httpx.AsyncClient(timeout=2) as http:
            for name in nodes:
                with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
                    url = f"http://{self.lab.host(name).address}:{MONITOR_PORT}/jsz"
                    leader = (await http.get(url)).json().get("meta_cluster", {}).get("leader")
                    if leader in nodes:
                        return str(leader)
        return nodes[1]

    async def nats_outage(self) -> None:
        node = await self._meta_leader()
        event = self.lab.nats_down(node, kill=True)
        await asyncio.sleep(self.options.nats_outage)  # the outage itself
        await asyncio.to_thread(self.lab.nats_up, node, event)

    async def partition(self) -> None:
        faults = self.lab.faults
        cut = faults.partition(self.deployment.workers[0], ["db", *self.lab.nats_hosts])
        await faults.hold(lambda: faults.heal(cut), self.options.partition_seconds)

    async def shape(self) -> None:
        o = self.options
        host = self.deployment.workers[-1]
        shaping = await asyncio.to_thread(
            lambda: self.lab.faults.shape(host, delay_ms=o.delay_ms, loss=o.loss)
        )
        await self.lab.faults.hold(lambda: self.lab.faults.clear(shaping), 3 * o.lease_seconds)


async def consistency_after(
    store: Store, events: list[FaultEvent], origin: float
) -> list[float | None]:
    """For each fault, seconds from its end until every order accepted before that end was final
    (0 when they all were already; None when some never got there). ``origin`` is the wall-clock
    time of the lab's second 0."""
    async with store.read() as conn:
        if await table_columns(conn, "shop_orders") is None:
            return [None for _ in events]
        from convergent_shop.orders import orders

        rows = (
            await conn.execute(sa.select(orders.c.created_at, orders.c.updated_at, orders.c.state))
        ).all()
    answers: list[float | None] = []
    for event in events:
        end = datetime.fromtimestamp(origin + (event.end or event.start), UTC)
        before = [(done, state) for created, done, state in rows if created <= end]
        if any(state not in ORDER_TERMINAL for _, state in before):
            answers.append(None)
            continue
        last = max((done for done, _ in before), default=end)
        answers.append(round(max(0.0, (last - end).total_seconds()), 3))
    return answers


def _accepted(accepted: int, asked: int) -> CheckResult:
    """Invariants over no orders prove nothing: a drill whose clients were all refused (a 401,
    an API that never answered) fails here instead of passing empty."""
    detail = f"{accepted} of {asked} orders accepted"
    return CheckResult("orders_accepted", "pass" if accepted > 0 else "fail", detail)


async def _ledger(psp_url: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=psp_url, timeout=10) as http:
        try:
            answer = await http.get("/ledger")
        except httpx.HTTPError:
            return None
    return dict(answer.json()) if answer.status_code == 200 else None


async def _prepare(lab: Lab, deployment: Deployment, store: Store) -> None:
    """After the API started: it creates the shop's tables."""
    await stock_up_catalogue(store)
    network = lab.network
    assert network is not None
    async with store.begin() as conn:  # the sample receiver on the API host, signed
        await create_endpoint(
            conn,
            f"{deployment.api_url}/notifications/webhook",
            description="sample receiver",
            secret=deployment.secret,
            allow=AllowList.parse([f"{network.subnet}.0/24"]),
        )


async def _drive(
    lab: Lab, deployment: Deployment, store: Store, options: ClusterDrillOptions, console: Console
) -> dict[str, Any]:
    workload = Workload(
        deployment.api_url,
        WorkloadConfig(
            orders=options.orders,
            bookings=options.bookings,
            seed=options.seed,
            run_id=f"cluster-{int(time.time())}",
            spread=options.duration * 0.8,
            timeout=15.0,  # a request through a lossy link or to a restarting API takes longer
            api_key=await issue_key(store, "cluster-client"),
        ),
    )
    exchange = f"{deployment.psp_url}/exchange"
    trades = TradeWorkload(store, exchange, options.trades, workload.config.run_id, options.seed)
    sampler = Sampler(store, lambda: workload.stats.as_dict() | trades.stats.as_dict())
    poller = FillPoller(store, exchange, interval=1.0)
    schedule = Schedule(lab, deployment, options)
    stop = asyncio.Event()
    loops: list[Loop] = [sampler, poller]
    if options.live:
        loops.append(LiveProgress(sampler, "convergent drill --cluster", console))
    tasks = [asyncio.create_task(loop.run(stop)) for loop in loops]
    supervisor = asyncio.create_task(deployment.supervise(stop))
    faults = asyncio.create_task(schedule.run(stop))
    stop_workload = asyncio.Event()
    load = asyncio.gather(workload.run(stop_workload), trades.run(stop_workload))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(load), options.duration)
        stop_workload.set()
        await load
        await faults  # every fault has happened and been undone before the settle
        settled = await settle(store, workload.stats.accepted, options.settle_timeout)
        await sampler.sample()
    finally:
        stop.set()
        stop_workload.set()
        for job in (load, faults):  # SIGTERM: nothing left running, no error left unread
            job.cancel()
        await asyncio.gather(*tasks, supervisor, faults, load, return_exceptions=True)
    ledger = await _ledger(deployment.psp_url)
    checks = await run_checks(
        CheckContext(store, ledger, workload.stats.orders_by_key, workload.stats.statuses)
    )
    checks.insert(0, _accepted(workload.stats.accepted, options.orders))
    faults_only = [e for e in lab.events if e.kind in _FAULT_KINDS]
    origin_wall = time.time() - (time.monotonic() - lab.faults.origin)
    after = await consistency_after(store, faults_only, origin_wall)
    shift = lab.faults.origin - sampler.started  # lab seconds -> the samples' seconds
    timeline = [
        {
            **asdict(e),
            "start": round(e.start + shift, 2),
            "end": None if e.end is None else round(e.end + shift, 2),
            "consistent_after": seconds,
        }
        for e, seconds in zip(faults_only, after, strict=True)
    ]
    return build_report(
        title="convergent drill --cluster",
        checks=checks,
        workload={
            **workload.stats.as_dict(),
            **trades.stats.as_dict(),
            "fills_recovered_by_polling": poller.recovered,
            "settled_in": settled,
        },
        samples=sampler.samples,
        consistency=await time_to_consistency(store),
        settings={
            **asdict(options),
            "report_dir": str(options.report_dir),
            "partition_seconds": options.partition_seconds,
            "database_url": lab.database_url,
            "broker_url": lab.broker_url,
        },
        extra={
            "faults": timeline,
            "events": [asdict(e) for e in lab.events],
            "notices": [*lab.notices, *schedule.notes],
            "restarts": deployment.restarts(),
            "lease_losses": deployment.lease_losses(),
            "layout": {name: lab.host(name).address for name in ["db", *lab.nats_hosts]}
            | {name: lab.host(name).address for name in deployment.processes},
            "runs_to_look_at": await runs_to_look_at(store),
        },
    )


def schedule_notes(report: dict[str, Any]) -> list[str]:
    """The faults this machine could not inject (the lab's own notices were printed at start)."""
    return [f"not injected: {f['detail']}" for f in report["faults"] if f["kind"] == "unsupported"]


async def run_cluster_drill(
    options: ClusterDrillOptions, console: Console | None = None
) -> dict[str, Any]:
    """Build the lab, deploy the shop, run the round; write the report. ``ok`` False on a
    violation; a machine without namespaces raises ``Unsupported`` (one line)."""
    console = console or Console()
    options.report_dir.mkdir(parents=True, exist_ok=True)
    hosts = ["api", "relay", *[f"worker-{n}" for n in range(options.workers)], "psp"]
    lab = Lab(hosts, log_dir=options.report_dir.resolve(), database="shop")
    began = time.monotonic()
    await asyncio.to_thread(lab.start)
    try:
        for notice in lab.notices:
            console.print(f"[yellow]{notice}[/]")
        deployment = Deployment(lab, options, new_secret())
        store = Store(lab.database_url)
        try:
            await store.migrate()
            await deployment.start()
            await _prepare(lab, deployment, store)
            report = await _drive(lab, deployment, store, options, console)
        finally:
            deployment.stop()
            await store.close()
    finally:
        await asyncio.to_thread(lab.stop)
    report["workload"]["drill_seconds"] = round(time.monotonic() - began, 1)
    json_path, html_path = write_report(report, options.report_dir)
    for note in schedule_notes(report):
        console.print(f"[yellow]{note}[/]")
    for fault in report["faults"]:
        after = fault["consistent_after"]
        console.print(
            f"{fault['kind']} {fault['target']} at {fault['start']:.0f}s: consistent "
            + ("never" if after is None else f"{after:.1f}s after")
        )
    console.print(f"report: {html_path} (JSON: {json_path})")
    return report
