"""Schedules on SQLite and PostgreSQL with a manual clock: each tick starts one run however many
schedulers fire at once; pause, resume, trigger; a changed definition re-plans."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from convergent.cli import app
from convergent.clock import ManualClock
from convergent.errors import UnknownSchedule
from convergent.store import Store
from convergent.store.schema import runs, schedule_ticks
from convergent.workflows import WorkflowContext, status, workflow
from convergent.workflows.schedules import (
    Schedule,
    Scheduler,
    fire_due,
    list_schedules,
    pause,
    resume,
    schedule,
    sync_schedules,
    trigger,
)
from tests.integration.workflows.conftest import running, until


@workflow(name="tests.sched.echo")
async def echo(ctx: WorkflowContext, label: str) -> str:
    return label


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hourly(name: str = "hourly", **options: object) -> Schedule:
    return schedule(echo, every=3600, args=("h",), name=name, **options)  # type: ignore[arg-type]


async def run_keys(store: Store) -> list[str]:
    async with store.read() as conn:
        rows = await conn.execute(
            sa.select(runs.c.key).where(runs.c.workflow == echo.name).order_by(runs.c.key)
        )
        return [r.key for r in rows]


async def test_a_tick_starts_one_run_and_plans_the_next(mstore: Store, clock: ManualClock) -> None:
    s = hourly()
    clock.set(at("2030-01-01T00:30"))
    await sync_schedules(mstore, [s])
    assert await fire_due(mstore, [s]) == 0
    clock.set(at("2030-01-01T01:00"))
    assert await fire_due(mstore, [s]) == 1
    assert await fire_due(mstore, [s]) == 0
    assert await run_keys(mstore) == ["schedule:hourly:2030-01-01T01:00:00+00:00"]
    [info] = await list_schedules(mstore)
    assert (info.next_at, info.last_tick_at) == (at("2030-01-01T02:00"), at("2030-01-01T01:00"))


async def test_many_schedulers_at_once_start_each_tick_once(
    database_url: str, clock: ManualClock
) -> None:
    s = hourly(catch_up="all")
    clock.set(at("2030-01-01T00:30"))
    stores = [Store(database_url, clock=clock) for _ in range(4)]
    try:
        await sync_schedules(stores[0], [s])
        clock.set(at("2030-01-01T03:00"))
        fired = await asyncio.gather(*(fire_due(st, [s]) for st in stores for _ in range(3)))
        assert sum(fired) == 3
        assert await run_keys(stores[0]) == [
            f"schedule:hourly:2030-01-01T0{h}:00:00+00:00" for h in (1, 2, 3)
        ]
        async with stores[0].read() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(schedule_ticks)) == 3
    finally:
        for st in stores:
            await st.close()


async def test_after_downtime_latest_runs_the_last_missed_tick_only(
    mstore: Store, clock: ManualClock
) -> None:
    s = hourly()
    clock.set(at("2030-01-01T00:30"))
    await sync_schedules(mstore, [s])
    clock.set(at("2030-01-01T05:30"))  # the workers were down for five ticks
    before = REGISTRY.get_sample_value(
        "convergent_schedule_ticks_total", {"schedule": "hourly", "outcome": "skipped"}
    )
    assert await fire_due(mstore, [s]) == 1
    assert await run_keys(mstore) == ["schedule:hourly:2030-01-01T05:00:00+00:00"]
    skipped = REGISTRY.get_sample_value(
        "convergent_schedule_ticks_total", {"schedule": "hourly", "outcome": "skipped"}
    )
    assert (skipped or 0) - (before or 0) == 4


async def test_pause_resume_and_trigger(mstore: Store, clock: ManualClock) -> None:
    s = hourly()
    clock.set(at("2030-01-01T00:30"))
    await sync_schedules(mstore, [s])
    await pause(mstore, "hourly")
    clock.set(at("2030-01-01T02:30"))
    assert await fire_due(mstore, [s]) == 0
    await sync_schedules(mstore, [s])  # a restarting worker keeps it paused
    assert (await list_schedules(mstore))[0].paused
    await resume(mstore, "hourly")
    assert await fire_due(mstore, [s]) == 0  # the ticks of the pause are skipped
    assert (await list_schedules(mstore))[0].next_at == at("2030-01-01T03:00")
    await trigger(mstore, "hourly")
    assert await fire_due(mstore, [s]) == 1
    assert await fire_due(mstore, [s]) == 0
    assert await run_keys(mstore) == ["schedule:hourly:manual:2030-01-01T02:30:00+00:00"]
    with pytest.raises(UnknownSchedule, match="convergent schedules list"):
        await pause(mstore, "nope")


async def test_a_changed_definition_plans_from_now(mstore: Store, clock: ManualClock) -> None:
    clock.set(at("2030-01-01T00:30"))
    await sync_schedules(mstore, [hourly("replanned")])
    assert (await list_schedules(mstore))[0].next_at == at("2030-01-01T01:00")
    changed = schedule(echo, every=600, args=("h",), name="replanned")
    await sync_schedules(mstore, [changed])
    [info] = await list_schedules(mstore)
    assert (info.next_at, info.every_seconds) == (at("2030-01-01T00:40"), 600.0)


async def test_the_scheduler_loop_starts_runs_a_worker_completes(
    mstore: Store, clock: ManualClock
) -> None:
    s = schedule(echo, cron="*/5 * * * *", args=("cron",), name="five-minutes")
    clock.set(at("2030-01-01T00:01"))
    scheduler = Scheduler(mstore, poll_interval=0.05, declared=[s])
    stop = asyncio.Event()
    task = asyncio.create_task(scheduler.run(stop))
    try:
        async with running(mstore):
            await until(lambda: _planned(mstore))
            clock.set(at("2030-01-01T00:05"))
            await until(lambda: _done(mstore))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert scheduler.fired == 1


async def _planned(store: Store) -> bool:
    return bool(await list_schedules(store))


async def _done(store: Store) -> bool:
    async with store.read() as conn:
        run_id = await conn.scalar(sa.select(runs.c.id).where(runs.c.workflow == echo.name))
    return run_id is not None and (await status(store, run_id)).status == "completed"


def test_the_cli_lists_pauses_resumes_and_triggers(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convergent.cli.app import console

    monkeypatch.setattr(console, "_width", 200)

    async def declare() -> None:
        async with Store(sqlite_url) as store:
            await sync_schedules(store, [hourly("cli-hourly")])

    asyncio.run(declare())
    cli = CliRunner()
    out = cli.invoke(app, ["schedules", "list", "--database-url", sqlite_url])
    assert out.exit_code == 0, out.output
    for shown in ("cli-hourly", "every 3600s", "active"):
        assert shown in out.output
    for action in ("pause", "resume", "trigger"):
        out = cli.invoke(app, ["schedules", action, "cli-hourly", "--database-url", sqlite_url])
        assert out.exit_code == 0, out.output
    out = cli.invoke(app, ["schedules", "list", "--json", "--database-url", sqlite_url])
    assert '"triggered_at": "' in out.output
    out = cli.invoke(app, ["schedules", "pause", "nope", "--database-url", sqlite_url])
    assert out.exit_code == 1
    assert "convergent schedules list" in out.output
    out = cli.invoke(app, ["schedules", "forget", "cli-hourly", "--database-url", sqlite_url])
    assert out.exit_code == 0, out.output
    out = cli.invoke(app, ["schedules", "list", "--json", "--database-url", sqlite_url])
    assert out.output.strip() == "[]"


def test_a_worker_importing_a_bad_cron_expression_stops_with_the_fix(
    sqlite_url: str, tmp_path: Path
) -> None:
    (tmp_path / "badcron.py").write_text(
        "from convergent.workflows import WorkflowContext, workflow\n"
        "from convergent.workflows.schedules import schedule\n\n"
        "@workflow(name='badcron.job')\n"
        "async def job(ctx: WorkflowContext) -> None:\n"
        "    return None\n\n"
        "schedule(job, cron='0 25 * * *')\n"
    )
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "convergent", "worker", "--import", "badcron"),
            "--database-url",
            sqlite_url,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cron expression '0 25 * * *' does not parse" in proc.stderr
    assert "Traceback" not in proc.stderr
