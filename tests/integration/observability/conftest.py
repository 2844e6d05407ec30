"""Processes of the observability tests: an own NATS server (it is cut, never the shared one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convergent.drill import free_port

ROOT = Path(__file__).resolve().parents[3]
NATS_SERVER = "/usr/sbin/nats-server"


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@pytest.fixture
def nats_port(tmp_path: Path) -> Iterator[int]:
    """A JetStream server of this test's own."""
    if not Path(NATS_SERVER).exists():
        pytest.fail(f"{NATS_SERVER} is missing (apt-get install nats-server)")
    port = free_port()
    store_dir = tmp_path / "nats"
    process = subprocess.Popen(
        [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``python -m convergent ARGS`` with the tests importable, its output in ``log``."""
    full_env = {
        **{k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"},
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        **(env or {}),
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "convergent", *args],
            env=full_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
