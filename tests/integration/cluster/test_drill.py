"""The cluster drill end to end, small: the shop on lab hosts, every kind of fault, invariants.

About two minutes on the 2-core box; one lab of its own (run the cluster tests one at a time).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from convergent_shop.sim.cluster.drill import ClusterDrillOptions, run_cluster_drill
from convergent_shop.sim.cluster.network import _owner
from tests.integration.cluster.conftest import require_namespaces

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_the_shop_on_lab_hosts_holds_every_invariant_through_each_kind_of_fault(
    tmp_path: Path,
) -> None:
    require_namespaces()
    options = ClusterDrillOptions(
        report_dir=tmp_path / "drill",
        orders=30,
        bookings=3,
        trades=2,
        kills=2,
        duration=40,
        settle_timeout=180,
        lease_seconds=3,
        nats_outage=8,
        live=False,
        seed=18,
    )
    report = await run_cluster_drill(options, Console(quiet=True))

    assert report["ok"], [c for c in report["checks"] if c["status"] == "fail"]
    assert report["workload"]["accepted_orders"] > 0
    faults = {f["kind"]: f for f in report["faults"]}
    assert {"kill", "nats-down", "partition", "shape"} <= faults.keys(), report["faults"]
    cut = faults["partition"]
    assert cut["target"] == "worker-0"
    assert cut["end"] - cut["start"] > options.lease_seconds  # longer than a lease
    assert all(f["consistent_after"] is not None for f in report["faults"])
    assert (options.report_dir / "report.html").read_text().count("fill-opacity") >= 4


def _namespaces_of(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.strip()]
    return [name for name in names if _owner(name) == pid]


def test_sigterm_to_the_cluster_drill_stops_the_shop_and_removes_every_host(
    tmp_path: Path,
) -> None:
    require_namespaces()
    argv = [sys.executable, "-m", "convergent", "drill", "--cluster", "--orders", "20"]
    argv += ["--duration", "60", "--no-live", "--report-dir", str(tmp_path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p:
        try:
            deadline = time.monotonic() + 120
            # the relay is the last process the drill starts: the workload runs from then on
            while not (tmp_path / "relay.log").exists():
                assert p.poll() is None, p.communicate()[0]
                assert time.monotonic() < deadline, "the drill did not deploy the shop in 120 s"
                time.sleep(0.2)
            assert any(n.endswith("-worker-1") for n in _namespaces_of(p.pid))
            p.send_signal(signal.SIGTERM)
            output, _ = p.communicate(timeout=120)
        finally:
            p.kill()
    assert p.returncode == 1
    assert "stopped by SIGTERM; the shop's processes were stopped too" in output
    assert "Traceback" not in output
    assert _namespaces_of(p.pid) == []
