"""The cluster drill end to end, small: the shop on lab hosts, every kind of fault, invariants.

About two minutes on the 2-core box; one lab of its own (run the cluster tests one at a time).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from convergent_shop.sim.cluster.drill import ClusterDrillOptions, run_cluster_drill
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
