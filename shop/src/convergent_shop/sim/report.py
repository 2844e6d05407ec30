"""The final report: invariants and figures as JSON, and one self-contained HTML page.

The HTML draws its own SVG charts (no scripts, no external files): the distribution of
time-to-consistency and the outbox backlog over time.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from convergent_shop.sim.checks import CheckResult

__all__ = ["build_report", "histogram_svg", "line_svg", "percentile", "write_report"]

_W, _H, _PAD = 560, 220, 36


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def build_report(
    *,
    title: str,
    checks: list[CheckResult],
    workload: dict[str, Any],
    samples: list[dict[str, Any]],
    consistency: list[float],
    settings: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    failed = [c.name for c in checks if c.status == "fail"]
    return {
        "title": title,
        "ok": not failed,
        "failed": failed,
        "settings": settings,
        "checks": [c.as_dict() for c in checks],
        "workload": workload,
        "time_to_consistency": {
            "count": len(consistency),
            "p50": percentile(consistency, 50),
            "p95": percentile(consistency, 95),
            "p99": percentile(consistency, 99),
            "max": max(consistency) if consistency else None,
            "values": consistency,
        },
        "final": samples[-1] if samples else {},
        "samples": samples,
        **(extra or {}),
    }


def histogram_svg(values: list[float], bins: int = 20, label: str = "seconds") -> str:
    if not values:
        return _empty_svg("no order reached a final state")
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - low) / width))] += 1
    top = max(counts)
    bar_w = (_W - 2 * _PAD) / bins
    bars = []
    for i, n in enumerate(counts):
        h = (_H - 2 * _PAD) * n / top
        x, y = _PAD + i * bar_w, _H - _PAD - h
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
            f'fill="#3b82f6"><title>{n} in [{low + i * width:.2f}, '
            f"{low + (i + 1) * width:.2f}) s</title></rect>"
        )
    return _frame("".join(bars), f"{low:.2f}", f"{high:.2f} {label}", str(top))


def line_svg(
    points: list[tuple[float, float]],
    label: str,
    faults: list[dict[str, Any]] | None = None,
) -> str:
    """The series over time; each fault (``start``/``end`` on the same seconds, ``kind``,
    ``target``) a shaded band, an instant one a line."""
    if len(points) < 2:
        return _empty_svg(f"no {label} figures (not available yet)")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, top = min(xs), max(xs) or 1.0, max(ys) or 1.0
    span = (x1 - x0) or 1.0

    def x_of(x: float) -> float:
        return _PAD + (min(max(x, x0), x1) - x0) / span * (_W - 2 * _PAD)

    bands = []
    for fault in faults or []:
        start = float(fault["start"])
        end = float(fault["end"] if fault.get("end") is not None else x1)
        left, width = x_of(start), max(1.5, x_of(end) - x_of(start))
        title = html.escape(f"{fault['kind']} {fault['target']} {start:.0f}-{end:.0f}s")
        bands.append(
            f'<rect x="{left:.1f}" y="{_PAD}" width="{width:.1f}" height="{_H - 2 * _PAD}" '
            f'fill="{_FAULT_COLOURS.get(fault["kind"], "#9ca3af")}" fill-opacity="0.3">'
            f"<title>{title}</title></rect>"
        )
    coords = " ".join(
        f"{_PAD + (x - x0) / span * (_W - 2 * _PAD):.1f},"
        f"{_H - _PAD - y / top * (_H - 2 * _PAD):.1f}"
        for x, y in points
    )
    line = f'<polyline points="{coords}" fill="none" stroke="#ef4444" stroke-width="2"/>'
    return _frame("".join(bands) + line, f"{x0:.0f}s", f"{x1:.0f}s", f"{top:.0f}")


_FAULT_COLOURS = {
    "kill": "#111827",
    "nats-down": "#f59e0b",
    "partition": "#8b5cf6",
    "shape": "#10b981",
    "db-crash": "#ef4444",
}


def _frame(body: str, x_low: str, x_high: str, y_top: str) -> str:
    axis = (
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#444"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#444"/>'
        f'<text x="{_PAD}" y="{_H - 12}" font-size="11">{html.escape(x_low)}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 12}" font-size="11" text-anchor="end">'
        f"{html.escape(x_high)}</text>"
        f'<text x="4" y="{_PAD}" font-size="11">{html.escape(y_top)}</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}">{axis}{body}</svg>'
    )


def _empty_svg(message: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="60">'
        f'<text x="10" y="35" font-size="13" fill="#666">{html.escape(message)}</text></svg>'
    )


_LINES = [
    ("outbox_backlog", "outbox backlog"),
    ("runs_in_flight", "workflow runs in flight"),
    ("trades_open", "exchange orders not yet filled"),
    ("ttc_p95", "time to consistency, p95 so far (s)"),
]


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}s"


def _series(samples: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(float(s["t"]), float(s[key])) for s in samples if s.get(key) is not None]


def _html(report: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(
        f'<tr class="{c["status"]}"><td>{esc(c["name"])}</td><td>{esc(c["status"])}</td>'
        f"<td>{esc(c['detail'])}</td></tr>"
        for c in report["checks"]
    )
    figures = "".join(
        f"<tr><td>{esc(str(k))}</td><td>{esc(json.dumps(v))}</td></tr>"
        for k, v in report["workload"].items()
    )
    ttc = report["time_to_consistency"]
    fills = report.get("trade_time_to_fill") or []
    faults = report.get("faults")
    lines = "".join(
        f"<h3>{esc(label)}</h3>" + line_svg(_series(report["samples"], key), label, faults)
        for key, label in _LINES
    )
    fault_rows = "".join(
        f"<tr><td>{_secs(f['start'])}</td><td>{_secs(f['end'])}</td><td>{esc(f['kind'])}</td>"
        f"<td>{esc(f['target'])}</td><td>{esc(f['detail'])}</td>"
        f"<td>{'never' if f.get('consistent_after') is None else _secs(f['consistent_after'])}"
        "</td></tr>"
        for f in faults or []
    )
    faults_section = (
        "<h2>Faults</h2><p>Bands on the charts below; the last column is the time from the "
        "fault's end until every order accepted before that end was final.</p>"
        "<table><tr><td>start</td><td>end</td><td>fault</td><td>target</td><td>detail</td>"
        f"<td>consistent after</td></tr>{fault_rows}</table>"
        if faults
        else ""
    )
    notices = "".join(f"<li>{esc(n)}</li>" for n in report.get("notices") or [])
    if notices:
        faults_section = f"<h2>What this machine cannot do</h2><ul>{notices}</ul>" + faults_section
    details = {
        k: report[k]
        for k in ("psp_ledger", "events", "restarts", "lease_losses", "layout")
        if report.get(k) is not None
    }
    if report.get("rounds"):
        details["rounds"] = [{"title": r["title"], "failed": r["failed"]} for r in report["rounds"]]
    console = report.get("console_url")
    look_at = "".join(
        f"<tr><td>{esc(r['order'])}</td><td>{esc(r['state'])}</td><td>{r['seconds']:.3f} s</td>"
        + (
            f'<td><a href="{esc(console)}/runs/{esc(r["run"])}">{esc(r["run"])}</a></td>'
            if console and r["run"]
            else f"<td>{esc(r['run'] or '')}</td>"
        )
        + "</tr>"
        for r in report.get("runs_to_look_at", [])
    )
    runs_section = (
        f"<h2>Runs to look at</h2><p>Orders not final, then the slowest; run ids open the "
        f"operator console{esc(report.get('console_hint', ''))}.</p>"
        f"<table><tr><td>order</td><td>state</td><td>took</td><td>run</td></tr>{look_at}</table>"
        if look_at
        else ""
    )
    verdict = "all invariants hold" if report["ok"] else f"violated: {', '.join(report['failed'])}"
    summary = (
        f"{ttc['count']} orders final; p50 {_secs(ttc['p50'])}, p95 {_secs(ttc['p95'])}, "
        f"max {_secs(ttc['max'])}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report["title"])}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; max-width: 60em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td {{ border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }}
tr.pass td:nth-child(2) {{ color: #15803d; }} tr.fail td:nth-child(2) {{ color: #b91c1c; }}
tr.skipped td:nth-child(2) {{ color: #6b7280; }}
</style></head><body>
<h1>{esc(report["title"])}</h1>
<p><strong>{esc(verdict)}</strong></p>
<h2>Invariants</h2><table>{rows}</table>
<h2>Time to consistency</h2><p>{esc(summary)}</p>{histogram_svg(ttc["values"])}
<h2>Exchange orders: time to fill (lost fills recovered by polling)</h2>
{histogram_svg(fills)}
{runs_section}
{faults_section}
<h2>Over time</h2>{lines}
<h2>Workload</h2><table>{figures}</table>
<h2>Details</h2><pre>{esc(json.dumps(details, indent=2, default=str))}</pre>
<h2>Settings</h2><pre>{esc(json.dumps(report["settings"], indent=2, default=str))}</pre>
</body></html>
"""


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json.dumps(report, indent=2, default=str))
    html_path.write_text(_html(report))
    return json_path, html_path
