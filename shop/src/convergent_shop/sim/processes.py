"""The shop as separate OS processes, for the drill: start, SIGKILL, restart, supervise.

Only commands the installed ``convergent`` has are started, so the drill runs as parts land.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from convergent.drill import Managed, free_port

__all__ = ["Cluster", "available_commands", "provider_args", "provider_process", "wait_healthy"]


def available_commands() -> set[str]:
    """Names of the subcommands of the installed ``convergent`` CLI."""
    from convergent.cli import app

    names = set()
    for command in app.registered_commands:
        callback = command.callback
        fallback = callback.__name__.replace("_", "-") if callback else ""
        names.add(command.name or fallback)
    return names


async def wait_healthy(url: str, managed: Managed, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1) as http:
        while time.monotonic() < deadline:
            if not managed.alive:
                raise RuntimeError(f"{managed.name} exited; see {managed.log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{managed.name} did not become healthy; see {managed.log}")


def provider_args(
    port: int,
    fault_rate: float,
    *,
    seed: int | None = None,
    fills_to: str | None = None,
    fill_interval_ms: int | None = None,
) -> list[str]:
    """`convergent psp`'s arguments: the provider on ``port``, failing at ``fault_rate``; with
    ``fills_to``, its exchange posts fills there, losing and duplicating them at that rate."""
    rate = str(fault_rate)
    args = ["psp", "--port", str(port), "--fault-rate", rate]
    if fills_to is not None:
        args += ["--exchange-callback-url", fills_to]
        args += ["--lost-fill-rate", rate, "--duplicate-fill-rate", rate]
    if fill_interval_ms is not None:
        args += ["--fill-interval-ms", str(fill_interval_ms)]
    if seed is not None:
        args += ["--seed", str(seed)]
    return args


@contextlib.asynccontextmanager
async def provider_process(
    ledger_url: str,
    log: Path,
    fault_rate: float,
    *,
    seed: int | None = None,
    fills_to: str | None = None,
    fill_interval_ms: int | None = None,
) -> AsyncIterator[str]:
    """`convergent psp` (the provider, the exchange under /exchange) in a process of its own on
    a free port, its ledger at ``ledger_url``; yields its URL once healthy, stops it after."""
    port = free_port()
    args = provider_args(
        port, fault_rate, seed=seed, fills_to=fills_to, fill_interval_ms=fill_interval_ms
    )
    env = {**os.environ, "CONVERGENT_PSP_DATABASE_URL": ledger_url}
    provider = Managed("psp", [sys.executable, "-m", "convergent", *args], env, log)
    provider.start()
    try:
        url = f"http://127.0.0.1:{port}"
        await wait_healthy(url, provider, timeout=60.0)
        yield url
    finally:
        provider.stop()


@dataclass
class Cluster:
    """``serve``, ``psp``, N workers and a relay (those that exist), on given URLs."""

    database_url: str
    broker_url: str
    workdir: Path
    workers: int = 2
    psp_fault_rate: float = 0.1
    worker_faults: str | None = None
    seed: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Managed] = field(default_factory=dict)
    _log_sizes: dict[str, int] = field(default_factory=dict)
    shop_url: str = ""
    psp_url: str = ""

    def _env(self, **extra: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"}
        return {
            **inherited,
            "CONVERGENT_DATABASE_URL": self.database_url,
            "CONVERGENT_BROKER_URL": self.broker_url,
            "CONVERGENT_PSP_URL": self.psp_url,
            **self.extra_env,
            **extra,
        }

    def _add(self, name: str, args: list[str], **env: str) -> Managed:
        argv = [sys.executable, "-m", "convergent", *args]
        managed = Managed(name, argv, self._env(**env), self.workdir / f"{name}.log")
        # the log is appended to across rounds: what this start writes begins here
        self._log_sizes[name] = managed.log.stat().st_size if managed.log.exists() else 0
        self.processes[name] = managed
        managed.start()
        return managed

    @property
    def exchange_url(self) -> str:
        return f"{self.psp_url}/exchange"

    @property
    def killable(self) -> list[Managed]:
        return [m for n, m in self.processes.items() if n.startswith(("worker", "relay"))]

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        commands = available_commands()
        psp_port, shop_port = free_port(), free_port()
        self.psp_url, self.shop_url = (
            f"http://127.0.0.1:{psp_port}",
            f"http://127.0.0.1:{shop_port}",
        )
        for stale in self.workdir.glob("psp.db*"):  # each round's provider starts empty
            stale.unlink()
        psp_db = f"sqlite+aiosqlite:///{self.workdir / 'psp.db'}"
        psp_args = provider_args(
            psp_port,
            self.psp_fault_rate,
            seed=self.seed,
            fills_to=f"{self.shop_url}/trading/fills",
        )
        psp = self._add("psp", psp_args, CONVERGENT_PSP_DATABASE_URL=psp_db)
        # every shop process dies at the crash point when it reaches it (the API for the
        # idempotency and resource points, workers and relay for the rest); the supervisor
        # restarts each without it
        faults = {"CONVERGENT_FAULTS": self.worker_faults} if self.worker_faults else {}
        # the API only answers HTTP; the workers and the relay do the background work
        serve = self._add("serve", ["serve", "--port", str(shop_port), "--no-loops"], **faults)
        await asyncio.gather(wait_healthy(self.psp_url, psp), wait_healthy(self.shop_url, serve))
        if "worker" in commands:
            for n in range(self.workers):
                worker_args = ["worker", "--import", "convergent_shop.background"]
                worker_args += ["--lease-seconds", "10"]
                worker_args += ["--no-relay"] if "relay" in commands else []
                self._add(f"worker-{n}", worker_args, **faults)
        if "relay" in commands:
            self._add("relay", ["relay"], **faults)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart any process that died (killed by the drill or by a crash point)."""
        while not stop.is_set():
            for managed in self.processes.values():
                if not managed.alive:
                    # a crash point fires once per process; the restart must be able to recover
                    managed.env.pop("CONVERGENT_FAULTS", None)
                    managed.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def wait_started(self, timeout: float = 120.0) -> None:
        """Until every worker and the relay has said it started: orders sent before then would
        queue behind their imports, and the first seconds' figures would measure start-up."""
        deadline = asyncio.get_running_loop().time() + timeout
        waiting = {
            name: ("relay" if name == "relay" else "worker", self._log_sizes.get(name, 0))
            for name in self.processes
            if name.startswith(("worker", "relay"))
        }
        while waiting:
            for name, (kind, offset) in list(waiting.items()):
                if not self.processes[name].alive:  # died starting: the supervisor restarts it
                    del waiting[name]
                    continue
                with contextlib.suppress(OSError), self.processes[name].log.open("rb") as log:
                    log.seek(offset)
                    if f"{kind} started".encode() in log.read():
                        del waiting[name]
            if not waiting:
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise RuntimeError(
                    f"{', '.join(sorted(waiting))} did not start in {timeout:.0f} s; see "
                    + ", ".join(str(self.processes[n].log) for n in sorted(waiting))
                )
            await asyncio.sleep(0.1)

    def restarts(self) -> dict[str, int]:
        return {name: m.starts - 1 for name, m in self.processes.items()}

    def stop(self) -> None:
        for managed in self.processes.values():
            managed.stop()
