"""The workload process's report: what the parent rebuilds is what the child counted."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter

import pytest

from convergent_shop.sim.workload import WorkloadStats
from convergent_shop.sim.workload_process import _ended, stats_from_json, stats_to_json


def _stats() -> WorkloadStats:
    return WorkloadStats(
        requests=12,
        retries=3,
        double_submits=2,
        accepted=5,
        cancels=1,
        bookings=2,
        booking_changes=1,
        customers=1,
        gave_up=1,
        statuses=Counter({202: 9, 409: 2, 503: 1}),
        not_available=Counter({"customers": 1}),
        order_ids={"o1", "o2", "o3"},
        orders_by_key={"k1": {"o1"}, "k2": {"o2", "o3"}},
        booking_codes={"b1"},
    )


def test_full_report_round_trips_through_json() -> None:
    stats = _stats()
    line = json.loads(json.dumps(stats_to_json(stats, full=True)))
    assert stats_from_json(line) == stats


def test_live_report_carries_the_figures_but_not_the_ids() -> None:
    line = stats_to_json(_stats(), full=False)
    assert line["figures"] == _stats().as_dict()
    assert line["figures"]["keys_with_several_orders"] == 1
    assert "orders_by_key" not in line


async def test_a_child_that_has_reported_exits_by_itself(caplog: pytest.LogCaptureFixture) -> None:
    """Killing a child that is exiting raced asyncio's child watcher: the kill reaped it first,
    the watcher logged "Unknown child process" and the exit code became 255."""
    for _ in range(5):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('final')", stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        assert await proc.stdout.read() == b"final\n"  # what the parent waits for: the last line
        await _ended(proc, grace=10.0)
        assert proc.returncode == 0
    assert not [r for r in caplog.records if "child process" in r.getMessage()]


async def test_a_child_that_has_not_reported_is_killed() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    await _ended(proc, grace=0.0)
    assert proc.returncode == -signal.SIGKILL
