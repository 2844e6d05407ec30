"""The shop as separate processes (serve, worker, relay, consume, psp), each observable."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from convergent.drill import free_port
from tests.acceptance.conftest import Server, start_process, wait_until_healthy

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A Prometheus text page as {(name, labels): value}."""
    found = {}
    for line in httpx.get(url, timeout=5).text.splitlines():
        m = SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
        found[(m["name"], labels)] = float(m["value"])
    return found


def value(
    page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """The sum of ``name``'s series that carry ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and wanted <= ls)


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.2)


@dataclass
class Shop:
    database_url: str
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)  # process -> its /metrics URL
    server: Server | None = None

    def start(self, name: str, args: list[str], metrics: bool = True) -> None:
        if metrics:
            port = free_port()
            args = [*args, "--metrics-port", str(port)]
            self.metrics[name] = f"http://127.0.0.1:{port}/metrics"
        self.processes[name] = start_process(args, self.database_url, self.log(name), self.env)
        if metrics:
            eventually(lambda: self._answers(self.metrics[name], name), what=f"{name} metrics")

    def _answers(self, url: str, name: str) -> bool:
        if self.processes[name].poll() is not None:
            raise AssertionError(f"{name} exited:\n{self.log(name).read_text()}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def serve(self) -> Server:
        port = free_port()
        log = self.log("serve")
        process = start_process(
            ["serve", "--port", str(port), "--no-loops"], self.database_url, log, self.env
        )
        self.processes["serve"] = process
        self.server = Server(f"http://127.0.0.1:{port}", self.database_url, process, log)
        wait_until_healthy(self.server)
        self.metrics["serve"] = f"{self.server.base_url}/metrics"
        return self.server

    def psp(self) -> None:
        port = free_port()
        self.env["CONVERGENT_PSP_URL"] = f"http://127.0.0.1:{port}"
        db = f"sqlite+aiosqlite:///{self.tmp / 'psp.db'}"
        self.processes["psp"] = start_process(
            ["psp", "--port", str(port), "--database-url", db],
            self.database_url,
            self.log("psp"),
            self.env,
        )
        eventually(lambda: _port_open(port), what="the psp")

    def log(self, name: str) -> Path:
        return self.tmp / f"{name}.log"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _stock_up(database_url: str, sku: str, qty: int) -> None:
    from convergent.store import Store
    from convergent_shop import inventory

    store = Store(database_url)
    try:
        async with store.begin() as conn:
            await inventory.stock_up(conn, sku, qty)
    finally:
        await store.close()


def stock_up(database_url: str, sku: str = "sku-1", qty: int = 100) -> None:
    asyncio.run(_stock_up(database_url, sku, qty))
