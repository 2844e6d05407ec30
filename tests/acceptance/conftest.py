"""Acceptance harness: a real `convergent serve` subprocess, driven over HTTP only."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from convergent.auth import create_key
from convergent.drill import free_port
from convergent.store import Store
from tests.contract.transports.brokers import kafka_url  # a tansu broker for the Kafka drill

__all__ = ["kafka_url"]


def issue_key(database_url: str, name: str, *, admin: bool = False) -> tuple[str, str]:
    """(id, secret) of a new API key, made as `convergent keys create` makes it."""

    async def create() -> tuple[str, str]:
        store = Store(database_url)
        try:
            async with store.begin() as conn:
                key, secret = await create_key(conn, name, admin=admin)
            return str(key.id), secret
        finally:
            await store.close()

    made: list[tuple[str, str]] = []  # in a thread: the caller may run an event loop
    thread = threading.Thread(target=lambda: made.append(asyncio.run(create())))
    thread.start()
    thread.join()
    return made[0]


@dataclass
class Server:
    base_url: str
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path
    #: name -> (id, secret) of the keys issued on this server's database
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)

    def key(self, name: str = "acceptance", *, admin: bool = False) -> str:
        """The secret of the API key ``name``, issued on first use."""
        if name not in self.keys:
            self.keys[name] = issue_key(self.database_url, name, admin=admin)
        return self.keys[name][1]

    def key_id(self, name: str = "acceptance") -> str:
        self.key(name)
        return self.keys[name][0]

    def client(self, as_client: str | None = "acceptance", **kwargs: object) -> httpx.Client:
        """A client sending the key of ``as_client`` (None: no key)."""
        headers = {"X-Api-Key": self.key(as_client)} if as_client else {}
        headers.update(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers, **kwargs)  # type: ignore[arg-type]

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
    keys: dict[str, tuple[str, str]] = {}  # one database: one set of keys for every server

    def start(*extra: str, env: dict[str, str] | None = None) -> Server:
        port = free_port()
        log = tmp_path / f"serve-{port}.log"
        args = ["serve", "--port", str(port), *extra]
        process = start_process(args, database_url, log, env)
        server = Server(f"http://127.0.0.1:{port}", database_url, process, log, keys)
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
