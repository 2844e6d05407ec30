"""The Grafana dashboard and docs/observability.md name only metrics the toolkit exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import convergent.idempotency.metrics
import convergent.outbox.consumer
import convergent.telemetry.gauges
import convergent.webhooks.metrics
import convergent.workflows._metrics  # noqa: F401 - each registers its metrics
from convergent import metrics
from convergent.telemetry.gauges import LAST_SAMPLE, Snapshot

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bconvergent_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def exported() -> set[str]:
    if LAST_SAMPLE.snapshot is None:  # the database gauges appear with their first sample
        LAST_SAMPLE.update(Snapshot())
    names = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_series_of_the_dashboard_is_exported() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    used = {n for p in dashboard["panels"] for t in p["targets"] for n in NAME.findall(t["expr"])}
    known = exported()
    missing = sorted(n for n in used if n not in known and base(n) not in known)
    assert missing == []


def test_every_metric_in_the_docs_is_exported_and_every_toolkit_one_documented() -> None:
    doc = (ROOT / "docs" / "observability.md").read_text()
    table = doc.split("<!-- metrics -->")[1].split("<!-- /metrics -->")[0]
    documented = {base(n) for n in NAME.findall(table)}
    known = {base(n) for n in exported() if n.startswith("convergent_")}
    assert sorted(documented - known) == []
    ours = {m._name for m in (getattr(metrics, n) for n in metrics.__all__)}
    ours |= {family.name for family in LAST_SAMPLE.collect()}
    assert sorted(ours - documented) == []
