"""Worker subprocesses for tests that stop, kill and replace them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.workflows.provider import Provider

ROOT = Path(__file__).resolve().parents[3]
PKG = "tests.integration.workflows"


def spawn(
    database_url: str,
    provider: Provider,
    log: Path,
    *modules: str,
    faults: str = "",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`convergent worker` importing ``modules`` (of this package), with a 1 s lease."""
    environ = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WF_TEST_DATABASE_URL": database_url,
        "WF_TEST_PROVIDER_URL": provider.url,
        "CONVERGENT_FAULTS": faults,
        **(env or {}),
    }
    command = [sys.executable, "-m", "convergent", "worker", "--database-url", database_url]
    for module in modules:
        command += ["--import", f"{PKG}.{module}"]
    command += ["--lease-seconds", "1", "--poll-interval", "0.1", "--no-relay", "--no-webhooks"]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=environ, cwd=ROOT, stdout=out, stderr=out)
