"""`convergent drill-app`: a user's own workflows under worker kills, and their own invariant."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

TRANSFERS = """
import sqlalchemy as sa
from convergent.workflows import StepContext, WorkflowContext, step, workflow

ledger = sa.Table(
    "transfers_ledger", sa.MetaData(),
    sa.Column("key", sa.String(255), primary_key=True), sa.Column("amount", sa.Integer),
)

@step
async def record(ctx: StepContext, amount: int) -> None:
    async with ctx.store.begin() as conn:
        await conn.run_sync(ledger.metadata.create_all)
        key = ctx.idempotency_key
        seen = await conn.execute(sa.select(ledger.c.key).where(ledger.c.key == key))
        if seen.first() is None:
            await conn.execute(ledger.insert().values(key=key, amount=amount))

@workflow(name="transfers.move")
async def move(ctx: WorkflowContext, amount: int) -> str:
    await record(-amount)
    await record(amount)
    return "moved"

async def check(store):
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(ledger.c.amount))).scalars().all()
    problems = [] if sum(rows) == 0 else [f"ledger sums to {sum(rows)}"]
    return problems + ([f"{len(rows)} entries"] if len(rows) != EXPECTED else [])
"""


def drill(
    tmp_path: Path, database_url: str, expected: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "transfers.py").write_text(TRANSFERS + f"\nEXPECTED = {expected}\n")
    args = ["drill-app", "--import", "transfers", "--workflow", "transfers.move", "--args", "[5]"]
    args += ["--runs", "30", "--kills", "2", "--duration", "4", "--settle-timeout", "60"]
    args += ["--database-url", database_url, "--report-dir", str(tmp_path / "r"), *extra]
    return subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("point", [None, "workflow.after_step_before_checkpoint"])
def test_the_users_runs_all_end_and_their_invariant_holds_under_kills(
    tmp_path: Path, database_url: str, point: str | None
) -> None:
    extra = ["--crash-point", point] if point else []
    done = drill(tmp_path, database_url, 60, *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["statuses"] == {"completed": 30}
    assert report["violations"] == []


def test_a_violated_user_invariant_fails_the_drill(tmp_path: Path, database_url: str) -> None:
    done = drill(tmp_path, database_url, 61)  # the check expects one entry too many
    assert done.returncode == 1
    assert "60 entries" in done.stdout + done.stderr


def test_the_docs_example_drills_green(tmp_path: Path, database_url: str) -> None:
    """docs/shop.md's transfers module, as printed there, passes its own drill."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "shop.md").read_text()
    (block,) = [
        b for b in re.findall(r"^```python\n(.*?)^```", doc, re.M | re.S) if "transfers" in b
    ]
    (tmp_path / "transfers.py").write_text(block)
    args = ["drill-app", "--import", "transfers", "--workflow", "transfers.move", "--args", "[5]"]
    args += ["--runs", "10", "--kills", "1", "--duration", "3", "--settle-timeout", "60"]
    args += ["--database-url", database_url, "--report-dir", str(tmp_path / "r")]
    done = subprocess.run(
        [sys.executable, "-m", "convergent", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["statuses"] == {"completed": 10}
    assert report["violations"] == []
