"""The demo's clients in a process of their own, as real clients are.

In one process the clients' HTTP work (about a twentieth of the CPU at the demo's load) shares
the shop's core and its event loop; here it runs on the other core. The child reports its
counters on stdout, a JSON line a few times a second, and everything (the order ids by key, for
the checks) when it ends. A line ``stop`` on its stdin ends the load the way ``stop`` ends
`Workload.run`: clients finish what they are doing and start nothing new.

    python -m convergent_shop.sim.workload_process BASE_URL CONFIG_JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from convergent import eventloop
from convergent_shop.sim.workload import Workload, WorkloadConfig, WorkloadStats

__all__ = ["WorkloadProcess", "stats_from_json", "stats_to_json"]

REPORT_EVERY = 0.25  # seconds between the child's counter lines
EXIT_GRACE = 10.0  # seconds a child that has reported gets to exit before it is killed


def stats_to_json(stats: WorkloadStats, *, full: bool) -> dict[str, Any]:
    """The counters (``full``: and the ids, for the checks) as JSON."""
    data: dict[str, Any] = {"figures": stats.as_dict(), "accepted": stats.accepted}
    if full:
        data["order_ids"] = sorted(stats.order_ids)
        data["orders_by_key"] = {k: sorted(v) for k, v in stats.orders_by_key.items()}
        data["booking_codes"] = sorted(stats.booking_codes)
    return data


def stats_from_json(data: dict[str, Any]) -> WorkloadStats:
    """A `WorkloadStats` from the child's last, full line."""
    figures = data["figures"]
    return WorkloadStats(
        requests=figures["requests"],
        retries=figures["retries"],
        double_submits=figures["double_submits"],
        accepted=data["accepted"],
        cancels=figures["cancels"],
        bookings=figures["bookings"],
        booking_changes=figures["booking_changes"],
        customers=figures["customers"],
        gave_up=figures["gave_up"],
        statuses=Counter({int(k): v for k, v in figures["statuses"].items()}),
        not_available=Counter(figures["not_available"]),
        order_ids=set(data["order_ids"]),
        orders_by_key={k: set(v) for k, v in data["orders_by_key"].items()},
        booking_codes=set(data["booking_codes"]),
    )


class _LiveStats:
    """What the parent knows while the child runs: the counters of its last line."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = WorkloadStats().as_dict()
        self.accepted = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.figures)


class WorkloadProcess:
    """`Workload` run in a child process; ``stats`` follows it (``as_dict()`` while it runs, a
    whole `WorkloadStats` once it has ended)."""

    def __init__(self, base_url: str, config: WorkloadConfig, log_path: Path | None = None) -> None:
        self.base_url = base_url
        self.config = config
        self.log_path = log_path
        self.stats: WorkloadStats | _LiveStats = _LiveStats()

    @property
    def final(self) -> WorkloadStats:
        """Everything the clients did, once `run` has returned."""
        if not isinstance(self.stats, WorkloadStats):
            raise RuntimeError("the workload process has not ended")
        return self.stats

    async def run(self, stop: asyncio.Event) -> None:
        with _log_file(self.log_path) as log:  # the child keeps its own copy of the descriptor
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "convergent_shop.sim.workload_process",
                self.base_url,
                json.dumps(asdict(self.config)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log if log is not None else asyncio.subprocess.DEVNULL,
                limit=16 * 1024 * 1024,  # the last line carries every order id
            )
        reading = asyncio.create_task(self._read(proc))
        stopping = asyncio.create_task(stop.wait())
        reported = False
        try:
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done() and proc.stdin is not None:
                with contextlib.suppress(ConnectionError):
                    proc.stdin.write(b"stop\n")
                    await proc.stdin.drain()
            await reading
            reported = True
        finally:
            stopping.cancel()
            await _ended(proc, grace=EXIT_GRACE if reported else 0.0)
        if not isinstance(self.stats, WorkloadStats):
            where = f"; see {self.log_path}" if self.log_path else ""
            raise RuntimeError(f"the workload process ended without its figures{where}")

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            data = json.loads(line)
            if data.get("final"):
                self.stats = stats_from_json(data)
            elif isinstance(self.stats, _LiveStats):
                self.stats.figures, self.stats.accepted = data["figures"], data["accepted"]


async def _ended(proc: asyncio.subprocess.Process, grace: float) -> None:
    """Wait for the child to exit; kill it after ``grace`` seconds.

    A child that has reported is left to exit by itself: killing it then races asyncio's child
    watcher (``kill`` reaps an exited child first, and the watcher logs "Unknown child process").
    """
    if proc.returncode is None and grace > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


def _log_file(path: Path | None) -> contextlib.AbstractContextManager[Any]:
    return path.open("ab") if path is not None else contextlib.nullcontext()


async def _child(base_url: str, config: WorkloadConfig) -> None:
    workload = Workload(base_url, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.readline()  # "stop", or the parent is gone (EOF): either way, stop
        stop.set()

    def report(full: bool = False) -> None:
        line = {**stats_to_json(workload.stats, full=full), "final": full}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()

    async def reporting() -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY)
            report()

    helpers = [asyncio.create_task(watch_stdin()), asyncio.create_task(reporting())]
    try:
        await workload.run(stop)
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
    report(full=True)


def main(argv: list[str]) -> None:
    base_url, raw = argv
    eventloop.run(_child(base_url, WorkloadConfig(**json.loads(raw))))


if __name__ == "__main__":
    main(sys.argv[1:])
