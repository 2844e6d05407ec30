"""The report: percentiles, charts drawn as inline SVG, JSON and HTML written."""

from __future__ import annotations

import json
from pathlib import Path

from convergent_shop.sim.checks import CheckResult
from convergent_shop.sim.report import (
    build_report,
    histogram_svg,
    line_svg,
    percentile,
    write_report,
)


def test_percentiles_pick_from_the_sorted_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None


def test_the_histogram_has_one_bar_per_bin() -> None:
    svg = histogram_svg([0.1, 0.2, 0.2, 3.0], bins=5)
    assert svg.startswith("<svg")
    assert svg.count("<rect") == 5


def test_a_line_needs_two_points() -> None:
    assert "<polyline" in line_svg([(0, 1), (1, 3)], "backlog")
    assert "<polyline" not in line_svg([(0, 1)], "backlog")


def test_a_failed_check_makes_the_report_not_ok_and_both_files_are_written(
    tmp_path: Path,
) -> None:
    report = build_report(
        title="t",
        checks=[
            CheckResult("a", "pass"),
            CheckResult("b", "fail", "broken"),
            CheckResult("c", "skipped"),
        ],
        workload={"requests": 3},
        samples=[{"t": 0, "outbox_backlog": 2}, {"t": 1, "outbox_backlog": 0}],
        consistency=[0.5, 1.5],
        settings={},
    )
    json_path, html_path = write_report(report, tmp_path)
    assert json.loads(json_path.read_text())["failed"] == ["b"]
    page = html_path.read_text()
    assert "<svg" in page
    assert "<script" not in page
    assert "violated: b" in page


def test_the_live_view_shows_not_available_figures_as_such() -> None:
    from rich.console import Console

    from convergent_shop.sim.progress import render

    console = Console(width=100, record=True)
    console.print(render("t", {"t": 1.0, "requests": 7, "outbox_backlog": None}))
    text = console.export_text()
    assert "HTTP requests sent" in text
    assert "n/a" in text
