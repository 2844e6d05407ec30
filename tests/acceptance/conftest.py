"""Acceptance harness: a real `convergent serve` subprocess, driven over HTTP only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from convergent.drill import free_port
from tests.contract.transports.brokers import kafka_url  # a tansu broker for the Kafka drill

__all__ = ["kafka_url"]


@dataclass
class Server:
    base_url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_process(
    args: list[str], database_url: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    inherited = {k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"}
    full_env = {**inherited, "CONVERGENT_DATABASE_URL": database_url, **(env or {})}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "convergent", *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_healthy(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log.read_text()}")
        try:
            if httpx.get(server.base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server did not become healthy:\n{server.log.read_text()}")


@pytest.fixture
def start_server(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start `convergent serve` on the test's database; extra args and env may be given."""
    started: list[Server] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        args = ["serve", "--port", str(port), *extra]
        process = start_process(args, database_url, log, env)
        server = Server(f"http://127.0.0.1:{port}", database_url, process, log)
        started.append(server)
        wait_until_healthy(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """A running shop on this test's database (SQLite and PostgreSQL)."""
    return start_server()
