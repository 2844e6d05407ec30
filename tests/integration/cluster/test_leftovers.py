"""A run that dies leaves nothing for long: SIGTERM cleans up at once, SIGKILL at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convergent_shop.sim.cluster import sweep_stale
from convergent_shop.sim.cluster.network import RUNTIME_ROOT
from tests.integration.cluster.conftest import require_namespaces

pytestmark = pytest.mark.cluster

RUNNER = str(Path(__file__).with_name("labrunner.py"))


@pytest.fixture
def run() -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """A harness run in a subprocess, up: its network's tag and its host process's pid."""
    require_namespaces()
    with subprocess.Popen([sys.executable, RUNNER], stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"the harness run exited with {process.wait()}"
        try:
            yield process, json.loads(line)
        finally:
            process.kill()


def traces(tag: str) -> list[str]:
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found = [f"namespace {tag}" for line in namespaces.splitlines() if line.startswith(tag)]
    found += [f"link of {tag}" for _ in range(links.count(tag))]
    return found + ([f"directory {tag}"] if (RUNTIME_ROOT / tag).exists() else [])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie of a dead parent waits for init; it holds no namespace any more
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_run_stopped_by_sigterm_removes_everything(
    run: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    process, up = run
    assert traces(up["tag"])
    assert not gone(up["pid"])
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 128 + signal.SIGTERM
    assert traces(up["tag"]) == []
    assert gone(up["pid"])


def test_a_run_killed_by_sigkill_leaves_what_the_next_run_removes(
    run: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    process, up = run
    process.kill()
    process.wait(10)
    assert traces(up["tag"])
    assert not gone(up["pid"])

    removed = sweep_stale()  # what every new Network does first
    assert any(up["tag"] in r for r in removed)
    assert traces(up["tag"]) == []
    assert gone(up["pid"])
