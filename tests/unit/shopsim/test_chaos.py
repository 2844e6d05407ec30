"""The drill's chaos: SIGKILLed processes are restarted by the supervisor."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from convergent.drill import Managed
from convergent_shop.sim.chaos import Chaos
from convergent_shop.sim.processes import Cluster, available_commands


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)  # poll interval


def test_the_drill_sees_which_commands_exist() -> None:
    assert {"serve", "psp", "demo", "drill"} <= available_commands()


async def test_a_killed_worker_is_restarted_by_the_supervisor(tmp_path: Path) -> None:
    cluster = Cluster("sqlite+aiosqlite:///x.db", "embedded://", tmp_path)
    worker = Managed("worker-0", ["sleep", "60"], dict(os.environ), tmp_path / "w.log")
    cluster.processes["worker-0"] = worker
    worker.start()
    stop = asyncio.Event()
    supervisor = asyncio.create_task(cluster.supervise(stop))
    try:
        chaos = Chaos(cluster, duration=0.2, kills=1, seed=1)
        await chaos.run(stop)
        assert chaos.events == ["SIGKILL worker-0"]
        await eventually(lambda: worker.starts == 2 and worker.alive)
        assert cluster.restarts() == {"worker-0": 1}
    finally:
        stop.set()
        await supervisor
        cluster.stop()


async def test_a_kill_with_nothing_to_kill_is_recorded_not_raised(tmp_path: Path) -> None:
    chaos = Chaos(Cluster("sqlite://", "embedded://", tmp_path), duration=0.05, kills=1)
    await chaos.run(asyncio.Event())
    assert chaos.events == ["kill skipped: no worker or relay running"]


async def test_a_process_restarted_after_a_crash_point_runs_without_it(tmp_path: Path) -> None:
    cluster = Cluster("sqlite+aiosqlite:///x.db", "embedded://", tmp_path)
    env = {**os.environ, "CONVERGENT_FAULTS": "workflow.some_point"}
    worker = Managed("worker-0", ["true"], env, tmp_path / "w.log")
    cluster.processes["worker-0"] = worker
    worker.start()
    stop = asyncio.Event()
    supervisor = asyncio.create_task(cluster.supervise(stop))
    try:
        await eventually(lambda: worker.starts >= 2)
        assert "CONVERGENT_FAULTS" not in worker.env
    finally:
        stop.set()
        await supervisor
        cluster.stop()
