"""One lab for the module: a PostgreSQL host, three NATS hosts and two empty hosts.

Needs root with CAP_NET_ADMIN; without it (a container) the tests fail under CI=true, and skip
locally, with the one line saying what is missing.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from convergent_shop.sim.cluster import Lab, capabilities
from tests.conftest import CI

HOSTCLIENT = str(Path(__file__).with_name("hostclient.py"))


def require_namespaces() -> None:
    caps = capabilities()
    if not caps.netns:
        message = f"cluster harness unavailable: {caps.missing[0]}"
        if CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_namespaces()
    lab = Lab(["client", "spare"], log_dir=tmp_path_factory.mktemp("lab"))
    with lab:
        yield lab


def on_host(lab: Lab, host: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run hostclient.py on ``host`` to completion; its last JSON line."""
    out = lab.host(host).run(sys.executable, HOSTCLIENT, *args, timeout=timeout)
    return dict(json.loads(out.strip().splitlines()[-1]))


@contextlib.contextmanager
def session_on_host(lab: Lab, host: str, *args: str) -> Iterator[Session]:
    """hostclient.py on ``host`` in the background, talking over pipes; killed at the end."""
    argv = lab.host(host).argv(sys.executable, HOSTCLIENT, *args)
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as p:
        try:
            yield Session(p)
        finally:
            p.kill()


@dataclass
class Session:
    process: subprocess.Popen[str]

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the host process exited ({self.process.poll()}) without answering"
        return dict(json.loads(line))

    def again(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("again\n")
        self.process.stdin.flush()
        return self.answer()
