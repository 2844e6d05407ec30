"""The cluster drill's figures: time to consistency after each fault, faults on the time axis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from convergent.cli import app
from convergent.store import Store
from convergent_shop.db import create_shop_tables
from convergent_shop.orders import orders
from convergent_shop.sim.cluster.drill import consistency_after
from convergent_shop.sim.cluster.faults import FaultEvent
from convergent_shop.sim.cluster.system import Capabilities
from convergent_shop.sim.report import build_report, line_svg, write_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _order(created: float, updated: float, state: str) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "client": "c",
        "customer_id": "cu",
        "items": [],
        "amount": Decimal("1.00"),
        "currency": "EUR",
        "state": state,
        "version": 1,
        "created_at": T0 + timedelta(seconds=created),
        "updated_at": T0 + timedelta(seconds=updated),
    }


async def test_consistency_after_a_fault_waits_for_every_order_accepted_before_its_end(
    tmp_path: Path,
) -> None:
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}") as store:
        async with store.begin() as conn:
            await create_shop_tables(conn)
            await conn.execute(
                orders.insert(),
                [
                    _order(1, 3, "completed"),
                    _order(4, 19, "failed"),  # accepted during the partition, final 9 s after it
                    _order(12, 13, "completed"),  # accepted after it: not its concern
                    _order(30, 31, "pending"),  # never final
                ],
            )
        partition = FaultEvent("partition", "worker-0", "", start=5.0, end=10.0)
        kill = FaultEvent("kill", "relay", "", start=2.0, end=2.0)
        late = FaultEvent("kill", "worker-1", "", start=35.0, end=35.0)
        after = await consistency_after(store, [partition, kill, late], T0.timestamp())
    assert after == [9.0, 1.0, None]


def test_faults_are_bands_on_the_time_axis() -> None:
    faults = [
        {"kind": "partition", "target": "worker-0", "start": 2.0, "end": 6.0},
        {"kind": "kill", "target": "relay", "start": 4.0, "end": 4.0},
    ]
    svg = line_svg([(0, 1), (10, 3)], "backlog", faults)
    assert svg.count("<rect") == 2
    assert "partition worker-0 2-6s" in svg


def test_the_cluster_drill_says_in_one_line_that_a_machine_without_namespaces_cannot_run_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import convergent_shop.sim.cluster as cluster

    missing = "not root with CAP_NET_ADMIN: cannot create network namespaces"
    monkeypatch.setattr(
        cluster, "capabilities", lambda: Capabilities(False, False, False, False, (missing,))
    )
    result = CliRunner().invoke(app, ["drill", "--cluster", "--no-live"])
    assert result.exit_code == 0, result.output  # CI goes on with what the machine can do
    assert result.output.strip() == f"cluster drill not run: {missing}"


def test_the_cluster_drill_refuses_a_database_or_broker_of_the_callers() -> None:
    result = CliRunner().invoke(app, ["drill", "--cluster", "--broker-url", "nats://x:4222"])
    assert result.exit_code == 1
    assert "--cluster brings its own PostgreSQL and NATS cluster" in result.output


def test_the_report_lists_each_fault_with_its_time_to_consistency_and_what_was_not_possible(
    tmp_path: Path,
) -> None:
    faults = [
        {
            "kind": "partition",
            "target": "worker-0",
            "detail": "from db",
            "start": 2.0,
            "end": 6.0,
            "consistent_after": 3.5,
        },
        {
            "kind": "kill",
            "target": "relay",
            "detail": "pid 7",
            "start": 4.0,
            "end": 4.0,
            "consistent_after": None,
        },
    ]
    samples = [{"t": 0.0, "outbox_backlog": 3}, {"t": 10.0, "outbox_backlog": 0}]
    report = build_report(
        title="cluster",
        checks=[],
        workload={},
        samples=samples,
        consistency=[],
        settings={},
        extra={"faults": faults, "notices": ["kernel lacks sch_netem: a delay line instead"]},
    )
    _, html_path = write_report(report, tmp_path)
    page = html_path.read_text()
    assert "<li>kernel lacks sch_netem: a delay line instead</li>" in page
    assert "<td>worker-0</td><td>from db</td><td>3.50s</td>" in page
    assert "<td>relay</td><td>pid 7</td><td>never</td>" in page
    assert page.count("fill-opacity") == 2  # both faults drawn on the backlog chart
