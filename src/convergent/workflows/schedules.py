"""Schedules: a workflow started on a cron expression or a fixed interval.

Declare a schedule in the module that defines the workflow (`schedule`); every worker importing it
runs the `Scheduler` loop (part of `convergent.runtime.standard_loops`). Each tick starts its run
exactly once however many workers run the loop and however often they restart: the tick's row in
``convergent_schedule_ticks`` and the run's key (``schedule:NAME:TICK``) are both unique, and the
run starts in the same transaction that moves the schedule to its next tick.

Catch-up after downtime (``catch_up``):

- ``"skip"``: ticks older than ``grace`` seconds are skipped; only ticks still within ``grace``
  of now run.
- ``"latest"`` (default): the most recent missed tick runs once, older ones are skipped.
- ``"all"``: every missed tick runs, oldest first (at most ``max_catch_up`` of the most recent).

Cron ticks are computed in the schedule's ``timezone`` (IANA name; daylight saving time is
handled: ``0 9 * * *`` in ``Europe/Paris`` is 08:00 UTC in winter, 07:00 UTC in summer). Interval
ticks are multiples of ``every`` seconds since the Unix epoch in UTC, so every process computes
the same ticks (``every=3600`` ticks at the top of each hour).

A paused schedule fires nothing; `resume` plans from the next tick after now (the ticks of the
pause are skipped whatever the policy). A changed definition (cron, interval, time zone) plans from
now too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import CroniterError, croniter
from prometheus_client import Counter

from convergent.errors import ConfigurationError, UnknownSchedule
from convergent.faults import fault_point, register
from convergent.store import Store, store_of
from convergent.store.schema import schedule_ticks, schedules
from convergent.workflows._api import start
from convergent.workflows._operate import record_action
from convergent.workflows._registry import Workflow, registered

__all__ = [
    "CATCH_UP",
    "SCHEDULES",
    "Schedule",
    "ScheduleInfo",
    "Scheduler",
    "Ticks",
    "UnknownSchedule",
    "fire_due",
    "forget",
    "list_schedules",
    "pause",
    "resume",
    "schedule",
    "sync_schedules",
    "trigger",
]

log = logging.getLogger("convergent.workflows.schedules")

#: wakes the schedulers at once on a pause, resume or trigger
SCHEDULES_CHANNEL = "convergent_schedules"

CATCH_UP = ("skip", "latest", "all")

AFTER_TICK = register(
    "schedule.after_tick_before_commit", "a tick's run and row are written but not committed"
)
_TICKS = Counter(
    "convergent_schedule_ticks",
    "Ticks of schedules: started (a run began, once) or skipped by the catch-up policy",
    ["schedule", "outcome"],
)

TICK_COMMITTED = register(
    "schedule.after_tick_committed", "a tick's run is committed; the run has not started"
)


@dataclass(frozen=True)
class Ticks:
    """When a cron expression (in a time zone) or a fixed interval ticks."""

    cron: str | None
    every: float | None
    timezone: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_after(self, when: datetime) -> datetime:
        """The first tick strictly after ``when``."""
        if self.every is not None:
            step = self.every
            return datetime.fromtimestamp((math.floor(when.timestamp() / step) + 1) * step, UTC)
        found: datetime = croniter(self.cron, when.astimezone(self.zone)).get_next(datetime)
        return found.astimezone(UTC)

    def at_or_before(self, when: datetime) -> datetime:
        """The last tick at or before ``when``."""
        if self.every is not None:
            step = self.every
            return datetime.fromtimestamp(math.floor(when.timestamp() / step) * step, UTC)
        local = when.astimezone(self.zone)
        prev: datetime = croniter(self.cron, local).get_prev(datetime)
        nxt: datetime = croniter(self.cron, prev).get_next(datetime)
        return (nxt if nxt <= local else prev).astimezone(UTC)

    def before(self, when: datetime) -> datetime:
        """The last tick strictly before ``when``."""
        if self.every is not None:
            step = self.every
            return datetime.fromtimestamp((math.ceil(when.timestamp() / step) - 1) * step, UTC)
        prev: datetime = croniter(self.cron, when.astimezone(self.zone)).get_prev(datetime)
        return prev.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """A declared schedule (see `schedule`)."""

    name: str
    workflow: Workflow[Any, Any]
    ticks: Ticks
    catch_up: str
    args: tuple[Any, ...]
    queue: str | None
    grace: float
    max_catch_up: int

    @property
    def spec(self) -> str:
        """What decides the ticks; a change re-plans from now."""
        t = self.ticks
        when = f"cron={t.cron}" if t.cron is not None else f"every={t.every}"
        return f"{when};tz={t.timezone}"

    def next_after(self, when: datetime) -> datetime:
        return self.ticks.next_after(when)

    def due_ticks(self, next_at: datetime, now: datetime) -> list[datetime]:
        """The ticks to run now, oldest first, by the catch-up policy (``next_at`` <= now)."""
        if self.catch_up == "latest":
            return [self.ticks.at_or_before(now)]
        lower = next_at
        if self.catch_up == "skip":
            lower = max(next_at, now - timedelta(seconds=self.grace))
        found: list[datetime] = []
        tick = self.ticks.at_or_before(now)
        while tick >= lower and len(found) < self.max_catch_up:
            found.append(tick)
            tick = self.ticks.before(tick)
        return found[::-1]


#: every schedule declared in this process, by name
SCHEDULES: dict[str, Schedule] = {}


def schedule(
    workflow: Workflow[Any, Any],
    *,
    cron: str | None = None,
    every: float | None = None,
    timezone: str = "UTC",
    catch_up: str = "latest",
    args: Sequence[Any] = (),
    name: str | None = None,
    queue: str | None = None,
    grace: float = 60.0,
    max_catch_up: int = 100,
) -> Schedule:
    """Run ``workflow(*args)`` on a ``cron`` expression (5 fields, or 6 with seconds) or
    ``every`` N seconds. Raises `ConfigurationError` naming the fix for a bad definition."""
    label = name or workflow.name
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"schedule {label!r}: give exactly one of cron='*/5 * * * *' or every=SECONDS"
        )
    if every is not None and every <= 0:
        raise ConfigurationError(f"schedule {label!r}: every must be a positive number of seconds")
    if cron is not None:
        try:
            croniter(cron)
        except (CroniterError, ValueError) as exc:
            raise ConfigurationError(
                f"schedule {label!r}: cron expression {cron!r} does not parse ({exc}); write "
                "five fields 'minute hour day-of-month month day-of-week', e.g. '*/5 * * * *' "
                "or '0 9 * * mon-fri'"
            ) from None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"schedule {label!r}: unknown time zone {timezone!r}; use an IANA name such as "
            "'UTC' or 'Europe/Paris'"
        ) from None
    if catch_up not in CATCH_UP:
        raise ConfigurationError(
            f"schedule {label!r}: catch_up must be one of {', '.join(CATCH_UP)}, not {catch_up!r}"
        )
    workflow.codec.encode_args(tuple(args))  # arguments that cannot be stored fail here
    found = Schedule(
        label,
        workflow,
        Ticks(cron, every, timezone),
        catch_up,
        tuple(args),
        queue,
        grace,
        max_catch_up,
    )
    SCHEDULES[label] = found
    return found


@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    workflow: str
    cron: str | None
    every_seconds: float | None
    timezone: str
    catch_up: str
    paused: bool
    next_at: datetime | None
    last_tick_at: datetime | None
    triggered_at: datetime | None


async def sync_schedules(store: Store, declared: Sequence[Schedule] | None = None) -> None:
    """Write the declared schedules to the database; a new or changed one plans from now, a
    known one keeps its next tick and whether it is paused."""
    now = store.clock.now()
    s = schedules.c
    async with store.begin() as conn:
        for sched in declared if declared is not None else list(SCHEDULES.values()):
            values = {
                "workflow": sched.workflow.name,
                "cron": sched.ticks.cron,
                "every_seconds": sched.ticks.every,
                "timezone": sched.ticks.timezone,
                "catch_up": sched.catch_up,
                "args": sched.workflow.codec.encode_args(sched.args),
                "queue": sched.queue,
                "updated_at": now,
            }
            ins = store.sql.insert(schedules).values(
                name=sched.name,
                spec=sched.spec,
                next_at=sched.next_after(now),
                paused=False,
                created_at=now,
                **values,
            )
            await conn.execute(ins.on_conflict_do_nothing(index_elements=["name"]))
            await conn.execute(sa.update(schedules).where(s.name == sched.name).values(**values))
            await conn.execute(
                sa.update(schedules)
                .where(s.name == sched.name, s.spec != sched.spec)
                .values(spec=sched.spec, next_at=sched.next_after(now))
            )


async def fire_due(store: Store, declared: Sequence[Schedule] | None = None) -> int:
    """Start the runs of every due tick (and manual trigger) of the declared schedules whose
    workflow this process serves; return how many runs started."""
    by_name = {
        sc.name: sc
        for sc in (declared if declared is not None else SCHEDULES.values())
        if sc.workflow.name in registered()
    }
    if not by_name:
        return 0
    now = store.clock.now()
    s = schedules.c
    started = 0
    counted: list[tuple[str, str, int]] = []
    async with store.begin() as conn:
        rows = (
            await conn.execute(
                store.sql.lock_for_claim(
                    sa.select(s.name, s.next_at, s.triggered_at, s.spec)
                    .where(
                        s.name.in_(list(by_name)),
                        s.paused.is_(False),
                        sa.or_(s.next_at <= now, s.triggered_at.is_not(None)),
                    )
                    .order_by(s.name)
                )
            )
        ).all()
        for row in rows:
            sched = by_name[row.name]
            if row.spec != sched.spec:
                continue  # another version of the code declares it: its sync re-plans first
            update: dict[str, Any] = {"updated_at": now}
            fired = 0
            if row.triggered_at is not None:
                fired += await _start_tick(conn, sched, row.triggered_at, manual=True)
                update["triggered_at"] = None
            if row.next_at is not None and row.next_at <= now:
                ticks = sched.due_ticks(row.next_at, now)
                for tick in ticks:
                    fired += await _start_tick(conn, sched, tick, manual=False)
                update["next_at"] = sched.next_after(now)
                if ticks:
                    update["last_tick_at"] = ticks[-1]
                skipped = _missed(sched, row.next_at, now) - len(ticks)
                if skipped > 0:
                    log.info("schedule %s skipped %d missed tick(s)", sched.name, skipped)
                    counted.append((sched.name, "skipped", skipped))
            if fired:
                counted.append((sched.name, "started", fired))
            started += fired
            await conn.execute(sa.update(schedules).where(s.name == row.name).values(**update))
        if started:
            fault_point(AFTER_TICK)
    for name, outcome, n in counted:  # counted once committed
        _TICKS.labels(schedule=name, outcome=outcome).inc(n)
    if started:
        fault_point(TICK_COMMITTED)
    return started


def _missed(sched: Schedule, next_at: datetime, now: datetime) -> int:
    """How many ticks fell in [next_at, now] (counted up to a bound, for the log)."""
    count, tick = 0, sched.ticks.at_or_before(now)
    while tick >= next_at and count < sched.max_catch_up + 1:
        count += 1
        tick = sched.ticks.before(tick)
    return count


async def _start_tick(conn: Any, sched: Schedule, tick: datetime, *, manual: bool) -> int:
    """Start the tick's run unless its row exists; 1 if it started now."""
    store = store_of(conn)
    kind = "manual:" if manual else ""
    key = f"schedule:{sched.name}:{kind}{tick.isoformat()}"
    run_id = await start(conn, sched.workflow, *sched.args, key=key, queue=sched.queue)
    ins = store.sql.insert(schedule_ticks).values(
        schedule=sched.name,
        tick_at=tick,
        run_id=run_id,
        manual=manual,
        created_at=store.clock.now(),
    )
    done = await conn.execute(ins.on_conflict_do_nothing(index_elements=["schedule", "tick_at"]))
    return 1 if done.rowcount else 0


async def list_schedules(store: Store) -> list[ScheduleInfo]:
    async with store.read() as conn:
        rows = (await conn.execute(sa.select(schedules).order_by(schedules.c.name))).all()
    return [
        ScheduleInfo(
            r.name,
            r.workflow,
            r.cron,
            r.every_seconds,
            r.timezone,
            r.catch_up,
            r.paused,
            r.next_at,
            r.last_tick_at,
            r.triggered_at,
        )
        for r in rows
    ]


async def _change(store: Store, name: str, verb: str, actor: str | None, **values: Any) -> None:
    async with store.begin() as conn:
        done = await conn.execute(
            sa.update(schedules)
            .where(schedules.c.name == name)
            .values(updated_at=store.clock.now(), **values)
        )
        if not done.rowcount:
            raise UnknownSchedule(
                f"no schedule named {name!r}: `convergent schedules list` shows them (a schedule "
                "is written when a worker importing its declaration starts)"
            )
        if actor is not None:  # who did what, when: with the change, or not at all
            await record_action(
                conn,
                actor=actor,
                action=f"schedule.{verb}",
                target_kind="schedule",
                target_id=name,
            )
        await store.notifier.notify(conn, SCHEDULES_CHANNEL)


async def pause(store: Store, name: str, *, actor: str | None = None) -> None:
    """Stop firing ``name`` until `resume`; ``actor`` records who did it."""
    await _change(store, name, "pause", actor, paused=True)


async def resume(store: Store, name: str, *, actor: str | None = None) -> None:
    """Fire ``name`` again from its next tick after now (the ticks of the pause are skipped)."""
    async with store.read() as conn:
        row = (await conn.execute(sa.select(schedules).where(schedules.c.name == name))).first()
    if row is None:
        await _change(store, name, "resume", actor, paused=False)  # raises UnknownSchedule
        return
    ticks = Ticks(row.cron, row.every_seconds, row.timezone)
    next_at = ticks.next_after(store.clock.now())
    await _change(store, name, "resume", actor, paused=False, next_at=next_at)


async def trigger(store: Store, name: str, *, actor: str | None = None) -> None:
    """Start a run of ``name`` now, outside its ticks (a worker's scheduler starts it, once)."""
    await _change(store, name, "trigger", actor, triggered_at=store.clock.now())


async def forget(store: Store, name: str, *, actor: str | None = None) -> None:
    """Remove ``name`` from the table (its ticks' history stays); a worker still declaring it
    writes it again when it starts."""
    async with store.begin() as conn:
        done = await conn.execute(sa.delete(schedules).where(schedules.c.name == name))
        if not done.rowcount:
            raise UnknownSchedule(
                f"no schedule named {name!r}: `convergent schedules list` shows them"
            )
        if actor is not None:
            await record_action(
                conn, actor=actor, action="schedule.forget", target_kind="schedule", target_id=name
            )


@dataclass
class Scheduler:
    """The loop firing due ticks, every ``poll_interval`` seconds (and on a trigger)."""

    store: Store
    poll_interval: float = 1.0
    declared: Sequence[Schedule] | None = None
    fired: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        if not (self.declared if self.declared is not None else SCHEDULES):
            await stop.wait()  # nothing to fire here; returning would be taken for a crash
            return
        synced = False
        async with self.store.notifier.subscribe(SCHEDULES_CHANNEL) as sub:
            while not stop.is_set():
                try:
                    if not synced:
                        await sync_schedules(self.store, self.declared)
                        synced = True
                    self.fired += await fire_due(self.store, self.declared)
                except Exception:  # the database is away: the next round tries again
                    log.exception("firing schedules failed; trying again")
                waits = [
                    asyncio.ensure_future(sub.wait(self.poll_interval)),
                    asyncio.ensure_future(stop.wait()),
                ]
                with contextlib.suppress(asyncio.CancelledError):
                    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for p in pending:
                        p.cancel()
