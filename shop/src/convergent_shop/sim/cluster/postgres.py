"""The database host's own PostgreSQL: a fresh data directory, listening on the host's address.

Trust authentication for the lab's /24 only; no Unix socket (nothing on this machine but the lab
reaches it). ``fsync=off``: the faults are killed processes and cut links, never a lost kernel,
and a killed postmaster loses nothing the kernel already has.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import time
from pathlib import Path

from convergent_shop.sim.cluster.network import Host
from convergent_shop.sim.cluster.process import HostProcess
from convergent_shop.sim.cluster.system import LabError, run

__all__ = ["PG_BIN", "PostgresServer"]

PG_BIN = Path("/usr/lib/postgresql/15/bin")
_SETTINGS = {
    "port": "5432",
    "unix_socket_directories": "",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "fsync": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}


class PostgresServer:
    def __init__(self, host: Host, datadir: Path, log: Path, user: str = "postgres") -> None:
        self.host, self.datadir, self.log, self.user = host, datadir, log, user
        if not (PG_BIN / "postgres").exists():
            raise LabError(f"no PostgreSQL 15 at {PG_BIN} (apt-get install postgresql-15)")
        settings = {**_SETTINGS, "listen_addresses": host.address}
        argv = [str(PG_BIN / "postgres"), "-D", str(datadir)]
        argv += [a for k, v in settings.items() for a in ("-c", f"{k}={v}")]
        self.process: HostProcess = host.spawn("postgres", argv, log, user=user, start=False)

    @property
    def address(self) -> str:
        return self.host.address

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@{self.address}:5432/{database}"

    def init(self) -> None:
        """initdb into an empty data directory, owned by the PostgreSQL user."""
        account = pwd.getpwnam(self.user)
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.datadir.mkdir(parents=True)
        for path in (self.datadir, self.datadir.parent):
            os.chown(path, account.pw_uid, account.pw_gid)
        as_user = ["setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups"]
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres"]
        run(*as_user, *initdb, "--auth=trust", "--no-sync", "-E", "UTF8", timeout=120)
        subnet = self.address.rsplit(".", 1)[0] + ".0/24"
        with (self.datadir / "pg_hba.conf").open("w") as hba:
            hba.write(f"host all all {subnet} trust\n")

    def start(self, timeout: float = 30.0) -> None:
        """Start the postmaster and wait until it accepts connections from the network."""
        self.process.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        probe = [str(PG_BIN / "pg_isready"), "-q", "-h", self.address, "-U", "postgres", "-t", "1"]
        while run(*probe, check=False).returncode != 0:
            if not self.process.alive:
                raise LabError(f"PostgreSQL on {self.host.name} exited; see {self.log}")
            if time.monotonic() > deadline:
                raise LabError(f"PostgreSQL on {self.host.name} not ready in {timeout}s")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends: the database host crashes."""
        self.process.kill()

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are cut, the data is checkpointed."""
        self.process.stop(signal.SIGINT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def create_database(self, name: str) -> str:
        """A new database; its URL."""
        psql = [str(PG_BIN / "psql"), "-q", "-h", self.address, "-U", "postgres", "-d", "postgres"]
        run(*psql, "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)
