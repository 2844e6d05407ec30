"""Crash safety: a worker SUBPROCESS is SIGKILLed at each fault point, a new one takes over,
and every step's effect lands exactly once (in the database and at a real loopback provider).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from convergent.errors import RunFailed
from convergent.store import Store
from convergent.workflows import result, resume, status, submit
from tests.integration.workflows import flows
from tests.integration.workflows.processes import spawn
from tests.integration.workflows.provider import Provider

ROOT = Path(__file__).resolve().parents[3]


def spawn_worker(
    database_url: str, provider: Provider, log: Path, faults: str = ""
) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},  # start faster
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "WF_TEST_DATABASE_URL": database_url,
        "WF_TEST_PROVIDER_URL": provider.url,
        "CONVERGENT_FAULTS": faults,
    }
    command = [
        sys.executable,
        "-m",
        "convergent",
        "worker",
        "--database-url",
        database_url,
        "--import",
        "tests.integration.workflows.flows",
        "--lease-seconds",
        "1",
        "--poll-interval",
        "0.1",
    ]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


async def effects_of(store: Store, run_id: object) -> list[str]:
    e = flows.effects.c
    async with store.read() as conn:
        rows = await conn.execute(sa.select(e.step).where(e.run_id == str(run_id)).order_by(e.id))
        return [r.step for r in rows]


async def crash_then_recover(
    database_url: str, provider: Provider, point: str, fail_ship: bool, log: Path
) -> tuple[Store, uuid.UUID]:
    store = Store(database_url)
    run_id = await submit(store, flows.order, "o-1", fail_ship, key="o-1")
    crashing = spawn_worker(database_url, provider, log, faults=point)
    assert crashing.wait(timeout=60) == -signal.SIGKILL, (
        crashing.stderr.read() if crashing.stderr else ""
    )
    replacement = spawn_worker(database_url, provider, log)
    try:
        if fail_ship:
            with pytest.raises(RunFailed, match="carrier refused"):
                await result(store, run_id, wait=60)
        else:
            assert await result(store, run_id, wait=60) == "shipped"
    finally:
        stop_worker(replacement)
    return store, run_id


@pytest.mark.parametrize(
    "point",
    [
        "workflow.after_claim",
        "workflow.before_step_call",  # charge recorded its start; the request never left
        "workflow.after_step_before_checkpoint",
        "workflow.after_checkpoint",
    ],
)
async def test_a_killed_worker_is_replaced_and_each_effect_happens_once(
    effects_db: str, provider: Provider, point: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    store, run_id = await crash_then_recover(effects_db, provider, point, False, log)
    try:
        assert await effects_of(store, run_id) == ["reserve", "charge", "ship"]
        assert provider.applied_kinds(str(run_id)) == ["charge"]
    finally:
        await store.close()


async def test_a_crash_before_a_compensation_checkpoint_still_compensates_once_in_reverse(
    effects_db: str, provider: Provider, tmp_path: Path
) -> None:
    point = "workflow.before_compensation_checkpoint"
    log = tmp_path / "worker.log"
    store, run_id = await crash_then_recover(effects_db, provider, point, True, log)
    try:
        assert await effects_of(store, run_id) == ["reserve", "charge", "refund", "release"]
        assert provider.applied_kinds(str(run_id)) == ["charge", "refund"]
        assert (await status(store, run_id)).status == "failed"
    finally:
        await store.close()


async def test_a_crash_after_the_provider_charged_is_reconciled_without_a_second_request(
    effects_db: str, provider: Provider, tmp_path: Path
) -> None:
    point = "workflow.after_step_before_checkpoint@2"  # the 2nd step: charge
    store, run_id = await crash_then_recover(effects_db, provider, point, False, tmp_path / "w.log")
    try:
        assert await effects_of(store, run_id) == ["reserve", "charge", "ship"]
        assert provider.applied_kinds(str(run_id)) == ["charge"]
        assert provider.requests[f"{run_id}:2:charge"] == 1  # asked, not charged again
    finally:
        await store.close()


async def test_a_worker_killed_in_a_resumed_run_is_replaced_and_effects_happen_once(
    effects_db: str, provider: Provider, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    async with Store(effects_db) as store:
        run_id = await submit(store, flows.fixable, "o-9")
        buggy = spawn(effects_db, provider, log, "flows", env={"WF_TEST_BROKEN": "1"})
        try:
            with pytest.raises(RunFailed, match="rejects our labels"):
                await result(store, run_id, wait=60)
        finally:
            stop_worker(buggy)
        async with store.begin() as conn:
            assert await resume(conn, run_id, actor="ops") == 2
        # ship runs, then charge reaches the provider and the worker dies before its checkpoint
        crashing = spawn(
            effects_db, provider, log, "flows", faults="workflow.after_step_before_checkpoint@2"
        )
        assert crashing.wait(timeout=60) == -signal.SIGKILL
        replacement = spawn(effects_db, provider, log, "flows")
        try:
            assert await result(store, run_id, wait=60) == "shipped"
        finally:
            stop_worker(replacement)
        assert await effects_of(store, run_id) == ["reserve", "ship", "charge"]
        assert provider.applied_kinds(str(run_id)) == ["charge"]
