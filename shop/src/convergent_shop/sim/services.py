"""A PostgreSQL and a NATS server of the drill's own, for the faults that stop a server.

`convergent drill --pg-restart` and `--broker-outage` restart and stop servers. They do that to
servers the drill started for itself (a temporary data directory, a free port on 127.0.0.1), and
never to the machine's own PostgreSQL or nats-server, which other programs share.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import tempfile
from pathlib import Path

from convergent.drill import free_port
from convergent.store import Store

__all__ = ["LocalNats", "LocalPostgres", "ServiceError", "postgres_bin"]

NATS_SERVER = Path("/usr/sbin/nats-server")


class ServiceError(RuntimeError):
    """A server of the drill's own that would not start (its message says what to install)."""


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's programs (Debian's layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parent)
    if not found:
        raise ServiceError(
            "--pg-restart starts a PostgreSQL of the drill's own and found no pg_ctl under "
            "/usr/lib/postgresql (apt-get install postgresql)"
        )
    return found[-1].parent


async def _run(
    what: str, *argv: str, log: Path, shown: Path | None = None, timeout: float = 120.0
) -> None:
    """Run a server's control program, its output appended to ``log``.

    Not through a pipe: a postmaster started by ``pg_ctl`` inherits the pipe and holds it open.
    ``shown``: where the log is to be read afterwards, for the error's message.
    """
    shown = shown or log
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(*argv, stdout=out, stderr=out)
        try:
            code = await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise ServiceError(f"{what}: no answer in {timeout:.0f}s; see {shown}") from None
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-2:]  # noqa: ASYNC240 (small, once)
        raise ServiceError(f"{what} failed ({' / '.join(tail)}); see {shown}")


class LocalPostgres:
    """initdb into a temporary directory, listen on a free loopback port; restart with pg_ctl.

    PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` user.
    """

    def __init__(self, log: Path) -> None:
        self.bin = postgres_bin()
        account = None
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "PostgreSQL will not run as root and there is no postgres user"
                ) from None
        self.kept_log = log  # where the server's log is copied when it stops
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="convergent-drill-pg-"))
        self.datadir = self.root / "data"
        # in its own directory: the postgres user may not reach the report's
        self.log = self.root / "postgres.log"
        self.log.touch()
        self._as: list[str] = []
        if account is not None:
            for path in (self.root, self.log):  # its files, and the log it appends to
                os.chown(path, account.pw_uid, account.pw_gid)
            self._as = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        if not self.datadir.exists():
            initdb = [str(self.bin / "initdb"), "-D", str(self.datadir), "-U", "postgres"]
            initdb += ["--auth=trust", "--no-sync", "-E", "UTF8"]
            await _run("initdb", *self._as, *initdb, log=self.log, shown=self.kept_log)
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c max_connections=200 "
            f"-c unix_socket_directories='{self.root}'"
        )
        await self._ctl("start", "-o", options, "-l", str(self.log))

    async def restart(self) -> None:
        """A fast shutdown (sessions cut, the data checkpointed), then a start."""
        await self._ctl("restart", "-m", "fast")

    async def stop(self) -> None:
        with contextlib.suppress(ServiceError):
            await self._ctl("stop", "-m", "immediate")
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log, self.kept_log)
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self, name: str) -> str:
        async with Store(self.url()) as admin:
            return await admin.create_database(name)

    async def _ctl(self, *args: str) -> None:
        pg_ctl = [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-w", *args]
        await _run(f"pg_ctl {args[0]}", *pg_ctl, log=self.log, shown=self.kept_log)


class LocalNats:
    """A nats-server with JetStream on a free loopback port; stopped and started on its store."""

    def __init__(self, log: Path) -> None:
        if not NATS_SERVER.exists():
            raise ServiceError(
                "--broker-outage starts a nats-server of the drill's own and found none at "
                f"{NATS_SERVER} (apt-get install nats-server)"
            )
        self.log = log
        self.port = free_port()
        self.store_dir = Path(tempfile.mkdtemp(prefix="convergent-drill-nats-"))
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        argv = [str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(self.port), "-js"]
        argv += ["-sd", str(self.store_dir), "-l", str(self.log)]
        self._process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # ready when it takes a connection
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            if self._process.returncode is not None or loop.time() > deadline:
                raise ServiceError(f"nats-server did not start; see {self.log}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)
