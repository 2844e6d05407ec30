"""A process on a host: started in its namespace, SIGKILLed with its children, restarted.

The pattern of the single-host drill's ``Managed``, plus the namespace and an optional user
(PostgreSQL refuses to run as root). ``ip netns exec`` and ``setpriv`` exec in place, so the pid
is the program's own; each start is a new session, so a kill takes the children too (PostgreSQL's
backends), as losing a machine would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from convergent_shop.sim.cluster.system import LabError

__all__ = ["HostProcess"]


@dataclass
class HostProcess:
    name: str
    netns: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    user: str | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    log_offset: int = 0  # where this start's output begins in ``log``

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        as_user = []
        if self.user is not None:
            as_user = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
        return ["ip", "netns", "exec", self.netns, *as_user, *self.argv]

    def start(self) -> None:
        if self.alive:
            raise LabError(f"{self.name} is already running (pid {self.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.log_offset = out.tell()
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the process and its children, as a power cut would."""
        # only while it is alive (or an unreaped zombie): the group id is then surely still ours
        if self.process is None or not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Ask it to exit (``sig`` to the process alone); SIGKILL after ``timeout``."""
        if self.process is None or not self.alive:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def wait_for_output(self, text: str, timeout: float = 10.0) -> None:
        """Wait until ``text`` shows up in this start's log (a program's "ready" line)."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.log.read_bytes()[self.log_offset :]:
            if not self.alive:
                raise LabError(f"{self.name} exited before saying {text!r}; see {self.log}")
            if time.monotonic() > deadline:
                raise LabError(
                    f"{self.name} did not say {text!r} within {timeout}s; see {self.log}"
                )
            time.sleep(0.02)
