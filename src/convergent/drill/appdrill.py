"""Drill the user's own workflows: worker processes that import the user's module are SIGKILLed
and restarted while N runs go through; every run must end, and the user's check must pass.

The user's module declares its workflows (``@workflow``) and, optionally, an
``async def check(store) -> list[str]`` naming every violated invariant of their own.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from convergent.drill.processes import Managed
from convergent.store import Store
from convergent.store.schema import runs
from convergent.workflows import get_workflow, start

__all__ = ["AppDrillOptions", "run_app_drill"]

FINAL = ("completed", "failed", "cancelled")
Check = Callable[[Store], Awaitable[list[str]]]


@dataclass
class AppDrillOptions:
    module: str
    workflow: str
    args: list[Any] = field(default_factory=list)
    runs: int = 100
    workers: int = 2
    kills: int = 3
    duration: float = 20.0
    settle_timeout: float = 60.0
    database_url: str | None = None
    crash_point: str | None = None
    report_dir: Path = Path("reports/drill-app")
    seed: int | None = None


def _load_check(module: str) -> Check | None:
    found = getattr(importlib.import_module(module), "check", None)
    return found if callable(found) else None


async def _unfinished(store: Store, ids: list[uuid.UUID]) -> dict[str, int]:
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(runs.c.status, sa.func.count())
            .where(runs.c.id.in_(ids), runs.c.status.not_in(FINAL))
            .group_by(runs.c.status)
        )
        return {str(s): int(n) for s, n in rows}


async def run_app_drill(options: AppDrillOptions) -> dict[str, Any]:
    """Run the drill; the report's ``ok`` is False on a stuck run or a violated check."""
    if os.getcwd() not in sys.path:  # the user's module, from where they run the drill
        sys.path.insert(0, os.getcwd())
    importlib.import_module(options.module)
    workflow = get_workflow(options.workflow)
    check = _load_check(options.module)
    options.report_dir.mkdir(parents=True, exist_ok=True)
    store = Store(options.database_url)
    await store.migrate()
    env = {k: v for k, v in os.environ.items() if k != "CONVERGENT_FAULTS"}
    env["CONVERGENT_DATABASE_URL"] = store.url.render_as_string(hide_password=False)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "convergent", "worker", "--import", options.module]
    argv += ["--no-relay", "--no-webhooks", "--lease-seconds", "5", "--poll-interval", "0.2"]
    workers = []
    for n in range(options.workers):
        first_life = (
            dict(env, CONVERGENT_FAULTS=options.crash_point) if options.crash_point else env
        )
        log = options.report_dir / f"worker-{n}.log"
        workers.append(Managed(f"worker-{n}", argv, first_life, log))
    rng = random.Random(options.seed)
    started = time.monotonic()
    events: list[str] = []
    try:
        for w in workers:
            w.start()
        ids = [
            await start(store, workflow, *options.args, key=f"drill-{started}-{i}")
            for i in range(options.runs)
        ]
        kill_at = sorted(rng.uniform(0.1, 0.9) * options.duration for _ in range(options.kills))
        deadline = started + options.duration + options.settle_timeout
        while time.monotonic() < deadline:
            for w in workers:  # a supervisor: the dead come back, without the crash point
                if not w.alive:
                    w.env = env
                    w.start()
                    events.append(f"restarted {w.name}")
            if kill_at and time.monotonic() - started >= kill_at[0]:
                kill_at.pop(0)
                victim = rng.choice(workers)
                victim.kill()
                events.append(f"SIGKILL {victim.name}")
            if not kill_at and not await _unfinished(store, ids):
                break
            await asyncio.sleep(0.2)
        stuck = await _unfinished(store, ids)
        violations = await check(store) if check else []
        async with store.read() as conn:
            outcome = await conn.execute(
                sa.select(runs.c.status, sa.func.count())
                .where(runs.c.id.in_(ids))
                .group_by(runs.c.status)
            )
            statuses = {str(s): int(n) for s, n in outcome}
    finally:
        for w in workers:
            w.stop()
        await store.close()
    report = {
        "ok": not stuck and not violations,
        "workflow": options.workflow,
        "runs": options.runs,
        "statuses": statuses,
        "stuck": stuck,
        "violations": violations,
        "events": events,
        "seconds": round(time.monotonic() - started, 2),
    }
    (options.report_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
