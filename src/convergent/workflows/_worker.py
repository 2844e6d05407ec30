"""The worker: claims due runs with a lease, keeps them in memory, checkpoints by group commit.

Any worker on any machine can take any run: a sweeper in every worker frees runs whose lease
expired (their worker died) and dead-letters runs that keep killing their workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from convergent import tracing
from convergent.errors import NonDeterminism, RunCancelled, StoreUnavailable
from convergent.faults import fault_point, register
from convergent.ids import uuid7
from convergent.outages import Outage, is_transient
from convergent.store import Store, direct
from convergent.store.dialect import Dialect
from convergent.store.schema import dead_letters, run_steps, runs
from convergent.workflows._committer import Committer, Finished, local_active
from convergent.workflows._context import (
    Interrupted,
    RunContext,
    Suspend,
    _current,
    record_from_row,
)
from convergent.workflows._metrics import dead_lettered, lease_taken_over, waiting_for_version
from convergent.workflows._registry import get_workflow, served
from convergent.workflows._statements import ACTIVE, RUNS_CHANNEL, statements_for
from convergent.workflows.queues import QUEUES, gate_of

__all__ = ["Worker", "local_workers"]

log = logging.getLogger("convergent.workflows")

_local: weakref.WeakKeyDictionary[Store, list[Worker]] = weakref.WeakKeyDictionary()


def local_workers(store: Store) -> list[Worker]:
    """Workers running in this process on ``store``: runs started here go straight to them."""
    return _local.setdefault(store, [])


AFTER_CLAIM = register("workflow.after_claim", "a worker claimed runs and holds their lease")


@dataclass
class _Claimed:
    id: uuid.UUID
    workflow: str
    version: str
    args: Any
    cancel_requested: bool


class Worker:
    """Runs workflow runs concurrently on asyncio until ``stop`` is set."""

    def __init__(
        self,
        store: Store,
        *,
        queues: Mapping[str, int] | Sequence[str] | None = None,
        concurrency: int = 50,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        sweep_interval: float | None = None,
        max_run_attempts: int = 10,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        if queues is None:  # the default queue and the declared fleet queues
            queues = {"default": concurrency, **dict.fromkeys(QUEUES, concurrency)}
        if not isinstance(queues, Mapping):
            queues = {q: concurrency for q in queues}
        self.queue_limits: dict[str, int] = dict(queues)
        self.concurrency = concurrency
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_interval = poll_interval
        self.sweep_interval = sweep_interval if sweep_interval is not None else lease_seconds / 2
        self.max_run_attempts = max_run_attempts
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid7().hex[-6:]}"
        self.committer = Committer(store)
        self.statements = statements_for(store.sql)
        if store.sql.one_statement_writes:
            st = self.statements
            self.committer.use_single_statement(
                {
                    id(st.save_step): "steps",
                    id(st.finish_run): "finish",
                    id(st.suspend_run): "suspend",
                    id(st.set_status): "status",
                }
            )
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._contexts: dict[uuid.UUID, RunContext] = {}
        self._per_queue: dict[str, int] = dict.fromkeys(self.queue_limits, 0)
        self._slot_freed = asyncio.Event()
        self.completed = 0
        self._reserved = 0
        self._timers: list[datetime] = []
        self._timer_set = asyncio.Event()
        self._stopping = False
        self.database_outage = Outage("database", log)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run work until ``stop`` is set, then release every lease held."""
        committer = asyncio.create_task(self.committer.run())
        local_workers(self.store).append(self)
        helpers = [
            asyncio.create_task(
                self._every(self.lease.total_seconds() / 3, self.renew_leases, stop)
            ),
            asyncio.create_task(self._every(self.sweep_interval, self.sweep, stop)),
        ]
        try:
            async with self.store.notifier.subscribe(RUNS_CHANNEL) as sub:
                failures = 0
                while not stop.is_set():
                    claim_began = self.store.clock.now()
                    try:
                        claimed = await self.claim_due_runs()
                    except Exception as exc:
                        # the database is away (a restart): the runs held go on, claims retry
                        failures += 1
                        self.database_outage.down(exc)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(
                                stop.wait(), min(self.poll_interval * 2**failures, 5.0)
                            )
                        continue
                    failures = 0
                    self.database_outage.up()
                    if claimed and self._free_slots() > 0:
                        continue  # there may be more due work
                    self._slot_freed.clear()
                    waits = [
                        asyncio.ensure_future(sub.wait(self._idle_timeout(claim_began))),
                        asyncio.ensure_future(stop.wait()),
                    ]
                    if self._free_slots() <= 0:
                        waits.append(asyncio.ensure_future(self._slot_freed.wait()))
                    self._timer_set.clear()
                    waits.append(asyncio.ensure_future(self._timer_set.wait()))
                    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for p in pending:
                        p.cancel()
        finally:
            self._stopping = True
            local_workers(self.store).remove(self)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._stop_runs()
            self.committer.close()  # queued checkpoints commit before the leases go
            await committer
            await self._release_leases()

    def _idle_timeout(self, claim_began: datetime) -> float:
        """Sleep until the next poll, or sooner when a timer this worker set falls due.

        A timer due since the last claim began is kept (and ends the sleep at once): that claim
        may have looked before it fell due.
        """
        now = self.store.clock.now()
        self._timers = [t for t in self._timers if t > claim_began]
        if not self._timers:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, (min(self._timers) - now).total_seconds()))

    def reserve(self, workflow: str, queue: str, version: str) -> bool:
        """Take a slot for a run started in this process, so it needs no separate claim."""
        if self._stopping or (workflow, version) not in served() or queue not in self.queue_limits:
            return False
        if gate_of(queue) is not None:  # every start of a fleet queue goes through its limits
            return False
        if self._free_slots() <= 0 or self._per_queue[queue] >= self.queue_limits[queue]:
            return False
        self._reserved += 1
        self._per_queue[queue] += 1
        return True

    def unreserve(self, queue: str) -> None:
        self._reserved -= 1
        self._per_queue[queue] -= 1

    def adopt(self, run_id: uuid.UUID, workflow: str, version: str, args: Any, queue: str) -> None:
        """Run a reserved run this process inserted already leased to this worker."""
        self._reserved -= 1
        if self._stopping:  # its lease expires and the sweeper of some worker frees it
            self._per_queue[queue] -= 1
            return
        fault_point(AFTER_CLAIM)
        self._contexts[run_id] = RunContext(
            run_id, workflow, self.store, self.committer, self.statements, self.id, {}
        )
        self._tasks[run_id] = asyncio.create_task(
            self._execute(_Claimed(run_id, workflow, version, args, False), queue)
        )

    async def claim_due_runs(self) -> int:
        """Claim due runs up to the free slots of each queue; start them; return how many."""
        total = 0
        for queue, limit in self.queue_limits.items():
            free = min(limit - self._per_queue[queue], self._free_slots())
            if free <= 0:
                continue
            claimed = await self._claim(queue, free)
            if claimed:
                fault_point(AFTER_CLAIM)
            for run in claimed:
                self._per_queue[queue] += 1
                self._tasks[run.id] = asyncio.create_task(self._execute(run, queue))
            total += len(claimed)
        return total

    def _free_slots(self) -> int:
        return self.concurrency - len(self._tasks) - self._reserved

    async def _claim(self, queue: str, limit: int) -> list[_Claimed]:
        pairs = served()
        if not pairs:
            return []
        now = self.store.clock.now()
        gate = gate_of(queue)  # fleet limits: highest priority first, within the fleet's limits
        sql = self.store.sql
        busy = list(self._tasks)  # a run we still execute (our lease lapsed) is not new work
        params: dict[str, Any] = {"b_queue": queue, "b_now": now, "b_limit": limit}
        if busy:
            params["b_busy"] = busy
        if gate is None and sql.one_statement_writes:
            rows = await self._claim_at_once(pairs, bool(busy), params)
        else:
            rows = await self._claim_in_transaction(pairs, gate, bool(busy), params)
        if not rows:
            return []
        ids = [row.id for row in rows]
        async with self.store.statement() as conn:  # ours now: nobody else writes their steps
            steps = (
                await direct.execute(
                    conn, sql.once("worker.records", lambda: _records(sql)), {"b_ids": ids}
                )
            ).all()
        claimed = [
            _Claimed(row.id, row.workflow, row.version, row.args, row.cancel_requested)
            for row in rows
        ]
        records: dict[uuid.UUID, dict[int, Any]] = {c.id: {} for c in claimed}
        for s in steps:
            records[s.run_id][s.seq] = record_from_row(s)
        for c in claimed:
            self._contexts[c.id] = RunContext(
                c.id,
                c.workflow,
                self.store,
                self.committer,
                self.statements,
                self.id,
                records[c.id],
                cancel_requested=c.cancel_requested,
            )
        return claimed

    async def _claim_at_once(
        self, pairs: frozenset[tuple[str, str]], busy: bool, params: dict[str, Any]
    ) -> list[Any]:
        """Pick and lease due runs in one statement that commits on its own: one round trip,
        found or not (a transaction around a select and an update takes four, three when
        nothing is due, which is most wake-ups of a fleet of workers)."""
        sql = self.store.sql
        taking = sql.once(("worker.take_due", pairs, busy), lambda: _take_due(sql, pairs, busy))
        now = params["b_now"]
        async with self.store.statement(write=True) as conn:
            found = await direct.execute(
                conn, taking, {**params, "b_owner": self.id, "b_until": now + self.lease}
            )
            return list(found.all())

    async def _claim_in_transaction(
        self, pairs: frozenset[tuple[str, str]], gate: Any, busy: bool, params: dict[str, Any]
    ) -> list[Any]:
        """Pick due runs, let the fleet's limits admit them, lease them: one transaction."""
        sql, now, gated = self.store.sql, params["b_now"], gate is not None
        select = sql.once(
            ("worker.claim", pairs, gated, busy), lambda: _claim_select(sql, pairs, gated, busy)
        )
        async with self.store.begin() as conn:
            rows = list((await direct.execute(conn, select, params)).all())
            if gate is not None and rows:
                rows = await gate.admit(conn, now, rows)
            if rows:
                await direct.execute(
                    conn,
                    sql.once("worker.take", lambda: _take(sql)),
                    {
                        "b_ids": [row.id for row in rows],
                        "b_owner": self.id,
                        "b_until": now + self.lease,
                        "b_now": now,
                    },
                )
        return rows

    async def _execute(self, claimed: _Claimed, queue: str) -> None:
        """Run (or resume) a claimed run; traced, in the trace of whatever started it."""
        if not tracing.enabled():
            return await self._execute_run(claimed, queue)
        with tracing.tracer.start_as_current_span(
            f"workflow {claimed.workflow}",
            context=tracing.parent_from(claimed.args.get("trace")),
            attributes={
                "convergent.workflow": claimed.workflow,
                "convergent.run_id": str(claimed.id),
            },
        ):
            return await self._execute_run(claimed, queue)

    async def _execute_run(self, claimed: _Claimed, queue: str) -> None:
        ctx = self._contexts[claimed.id]
        token = _current.set(ctx)
        local_active.add(claimed.id)
        try:
            wf = get_workflow(claimed.workflow, claimed.version)
            args = wf.codec.decode_args(claimed.args.get("args", []))
            try:
                value = wf.codec.result.encode(await wf.fn(ctx, *args))
            except Suspend as s:
                await ctx.settle()
                await self.committer.write(
                    self.statements.suspend_run,
                    {
                        "b_id": ctx.run_id,
                        "b_owner": self.id,
                        "b_until": s.until,
                        "b_now": self.store.clock.now(),
                    },
                )
                if s.until is not None:
                    # wake for our own timer without waiting for a poll; only once the run is
                    # parked, or a claim at the timer (a slow commit) finds it still ours
                    self._timers.append(s.until)
                    self._timer_set.set()
                return
            except RunCancelled as exc:
                await self._finish(ctx, "cancelled", None, exc.message)
            except NonDeterminism as exc:
                await self._park(ctx, exc)
            except StoreUnavailable as exc:  # workflow code met the database away: not its fault
                raise Interrupted(exc) from exc
            except Exception as exc:
                log.warning(
                    "run %s of %s failed: %s",
                    ctx.run_id,
                    ctx.workflow,
                    exc,
                    extra={"run_id": str(ctx.run_id), "workflow": ctx.workflow},
                )
                await self._finish(ctx, "failed", None, f"{type(exc).__name__}: {exc}")
            else:
                await self._finish(ctx, "completed", value, None)
        except asyncio.CancelledError:
            pass  # stopping, or the lease was lost: the next holder replays from the checkpoints
        except (Interrupted, Exception) as exc:
            cause = exc.__cause__ if isinstance(exc, Interrupted) else exc
            await self._interrupted(ctx.run_id, cause)
        finally:
            local_active.discard(claimed.id)
            _current.reset(token)
            self._tasks.pop(claimed.id, None)
            self._contexts.pop(claimed.id, None)
            self._per_queue[queue] -= 1
            self._slot_freed.set()

    async def _interrupted(self, run_id: uuid.UUID, cause: BaseException | None) -> None:
        """The run's progress could not be recorded: put it back to resume from its checkpoints.

        With the database away, the run is released as soon as it is back, without counting an
        attempt (a restart is nobody's fault). Any other cause keeps the lease until it expires,
        so the sweeper counts the attempt and dead-letters a run that always fails this way.
        """
        if not isinstance(cause, StoreUnavailable):
            log.error(
                "run %s could not be saved (%s); its lease will expire and it will be retried",
                run_id,
                cause,
            )
            return
        log.warning("run %s paused, the database is away (%s); it resumes later", run_id, cause)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lease.total_seconds()
        delay = 0.2
        r = runs.c
        while not self._stopping:
            now = self.store.clock.now()
            try:
                await self._release(now, r.id == run_id)
                return
            except Exception:
                if loop.time() + delay > deadline:
                    return  # the lease runs out; a sweeper frees the run
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _park(self, ctx: RunContext, exc: NonDeterminism) -> None:
        """The code does not match the run's history (a deploy changed it): neither fail nor
        compensate; say why the run waits and try again after a lease, so deploying code that
        matches (the old version beside the new, or a `patched` guard) lets it go on."""
        log.error("run %s of %s waits for matching code: %s", ctx.run_id, ctx.workflow, exc)
        await ctx.settle()
        now = self.store.clock.now()
        r = runs.c
        async with self.store.begin() as conn:
            await conn.execute(
                sa.update(runs)
                .where(r.id == ctx.run_id, r.lease_owner == self.id)
                .values(
                    lease_owner=None,
                    lease_until=None,
                    next_at=now + self.lease,
                    waiting_for=f"code matching its history ({exc.message})",
                    updated_at=now,
                )
            )

    async def _finish(self, ctx: RunContext, status: str, value: Any, error: str | None) -> None:
        pending = ctx.settle()  # the last checkpoint commits with or before this write
        done = self.committer.enqueue(
            self.statements.finish_run,
            {
                "b_id": ctx.run_id,
                "b_owner": self.id,
                "b_status": status,
                "b_result": value,
                "b_error": error,
                "b_now": self.store.clock.now(),
            },
            Finished(ctx.run_id, ctx.workflow, status, value, error),
        )
        await pending
        await done
        self.completed += 1

    async def renew_leases(self) -> None:
        """Extend the lease of every held run; stop the runs someone else took; see cancels."""
        if not self._tasks:
            return
        now = self.store.clock.now()
        r = runs.c
        held = list(self._tasks)
        async with self.store.begin() as conn:
            await conn.execute(
                sa.update(runs)
                .where(r.id.in_(held), r.lease_owner == self.id)
                .values(lease_until=now + self.lease)
            )
            rows = (
                await conn.execute(
                    sa.select(r.id, r.cancel_requested).where(
                        r.id.in_(held), r.lease_owner == self.id
                    )
                )
            ).all()
        still = {row.id: row.cancel_requested for row in rows}
        for run_id in held:
            ctx = self._contexts.get(run_id)
            if run_id not in still:
                task = self._tasks.get(run_id)
                if task is not None:
                    log.warning(
                        "lost the lease of run %s; another worker has it",
                        run_id,
                        extra={"run_id": str(run_id)},
                    )
                    task.cancel()
            elif ctx is not None and still[run_id]:
                ctx.cancel_requested = True

    async def sweep(self) -> int:
        """Free runs whose worker vanished; dead-letter those that exhausted their attempts."""
        now = self.store.clock.now()
        r = runs.c
        async with self.store.begin() as conn:
            rows = (
                await conn.execute(
                    self.store.sql.lock_for_claim(
                        sa.select(r.id, r.workflow, r.key, r.attempts, r.args).where(
                            r.status.in_(ACTIVE), r.lease_until < now
                        )
                    )
                )
            ).all()
            dead = [row for row in rows if row.attempts + 1 >= self.max_run_attempts]
            live = [row.id for row in rows if row.attempts + 1 < self.max_run_attempts]
            if live:
                await conn.execute(
                    sa.update(runs)
                    .where(r.id.in_(live))
                    .values(
                        lease_owner=None,
                        lease_until=None,
                        next_at=now,
                        attempts=r.attempts + 1,
                        updated_at=now,
                    )
                )
                await self.store.notifier.notify(conn, RUNS_CHANNEL)
                lease_taken_over(len(live))
            for row in dead:
                reason = f"the run's worker died {row.attempts + 1} times; giving up"
                await conn.execute(
                    sa.update(runs)
                    .where(r.id == row.id)
                    .values(
                        status="failed",
                        error=reason,
                        lease_owner=None,
                        lease_until=None,
                        next_at=None,
                        attempts=r.attempts + 1,
                        updated_at=now,
                    )
                )
                await conn.execute(
                    sa.insert(dead_letters).values(
                        id=uuid7(),
                        source="workflow",
                        source_ref=str(row.id),
                        name=row.workflow,
                        key=row.key,
                        payload=row.args,
                        reason=reason,
                        attempts=row.attempts + 1,
                        status="dead",
                        created_at=now,
                    )
                )
        for row in dead:
            dead_lettered(row.workflow, "")
            log.error(
                "run %s of %s dead-lettered: it killed its worker too often",
                row.id,
                row.workflow,
                extra={"run_id": str(row.id), "workflow": row.workflow, "key": row.key},
            )
        await self.mark_unserved()
        return len(rows)

    async def mark_unserved(self) -> int:
        """Say why due runs of workflows this worker knows wait: no worker took them for a whole
        lease, and their version is not one this worker serves (a deploy dropped it). They stay
        due; the first worker serving their version takes them and clears the note."""
        now = self.store.clock.now()
        pairs = served()
        names = {name for name, _ in pairs}
        if not names:
            return 0
        r = runs.c
        async with self.store.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(r.workflow, r.version)
                    .where(
                        r.workflow.in_(names),
                        sa.not_(_serving(pairs)),
                        r.status.in_(ACTIVE),
                        r.lease_owner.is_(None),
                        r.next_at < now - self.lease,
                        r.waiting_for.is_(None),
                    )
                    .group_by(r.workflow, r.version)
                )
            ).all()
            for row in rows:
                await conn.execute(
                    sa.update(runs)
                    .where(
                        r.workflow == row.workflow,
                        r.version == row.version,
                        r.status.in_(ACTIVE),
                        r.lease_owner.is_(None),
                        r.next_at < now - self.lease,
                        r.waiting_for.is_(None),
                    )
                    .values(
                        waiting_for=f"a worker serving version {row.version!r} of "
                        f"{row.workflow!r} (register that version beside the new one)",
                    )
                )
            counts = (
                await conn.execute(
                    sa.select(r.workflow, r.version, sa.func.count())
                    .where(r.workflow.in_(names), r.status.in_(ACTIVE), r.waiting_for.is_not(None))
                    .group_by(r.workflow, r.version)
                )
            ).all()
        waiting_for_version({(w, v): int(n) for w, v, n in counts}, names)
        return len(rows)

    async def _stop_runs(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # a task cancelled before it began never ran its cleanup: forget its slot here
        self._tasks.clear()
        self._contexts.clear()
        self._per_queue = dict.fromkeys(self.queue_limits, 0)
        self._reserved = 0

    async def _release_leases(self) -> None:
        with contextlib.suppress(Exception):
            await self._release(self.store.clock.now())

    async def _release(self, now: datetime, *which: sa.ColumnElement[bool]) -> None:
        """Give up this worker's lease on its active runs (``which`` narrows them) and wake the
        others: each run is due at once, or at its own time if it was sleeping."""
        r = runs.c
        async with self.store.begin() as conn:
            await conn.execute(
                sa.update(runs)
                .where(r.lease_owner == self.id, r.status.in_(ACTIVE), *which)
                .values(
                    lease_owner=None,
                    lease_until=None,
                    next_at=sa.func.coalesce(r.next_at, now),
                    updated_at=now,
                )
            )
            await self.store.notifier.notify(conn, RUNS_CHANNEL)

    async def _every(self, seconds: float, job: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            if stop.is_set():
                return
            try:
                await job()
            except Exception as exc:
                if is_transient(exc):  # the claim loop says the database is away
                    self.database_outage.down(exc)
                else:
                    log.exception("worker housekeeping failed; trying again")


# the claim's statements, built once per shape (building one costs more than SQLite running it)
def _claim_select(
    sql: Dialect, pairs: frozenset[tuple[str, str]], gated: bool, busy: bool
) -> sa.Select[Any]:
    r = runs.c
    order = (r.priority.desc(), r.next_at) if gated else (r.next_at,)
    select = (
        sa.select(r.id, r.workflow, r.version, r.args, r.cancel_requested, r.status)
        .where(
            r.queue == sa.bindparam("b_queue", type_=r.queue.type),
            _serving(pairs),
            r.status.in_(ACTIVE),
            r.lease_owner.is_(None),
            r.next_at <= sa.bindparam("b_now", type_=r.next_at.type),
        )
        .order_by(*order)
    )
    if busy:
        select = select.where(sa.not_(sql.among_param(r.id, "b_busy")))
    return sql.lock_for_claim(select.limit(sa.bindparam("b_limit")))


def _take(sql: Dialect) -> sa.Update:
    return _leasing(sa.update(runs).where(sql.among_param(runs.c.id, "b_ids")))


def _take_due(sql: Dialect, pairs: frozenset[tuple[str, str]], busy: bool) -> sa.Update:
    """``_claim_select`` and ``_take`` as one statement (where DML may use a CTE)."""
    due = _claim_select(sql, pairs, False, busy).cte("due")
    r = runs.c
    return _leasing(sa.update(runs).where(r.id == due.c.id)).returning(
        r.id, r.workflow, r.version, r.args, r.cancel_requested
    )


def _leasing(update: sa.Update) -> sa.Update:
    r = runs.c
    return update.values(
        lease_owner=sa.bindparam("b_owner", type_=r.lease_owner.type),
        lease_until=sa.bindparam("b_until", type_=r.lease_until.type),
        next_at=None,
        status=sa.case((r.status == "pending", "running"), else_=r.status),
        waiting_for=None,
        updated_at=sa.bindparam("b_now", type_=r.updated_at.type),
    )


def _records(sql: Dialect) -> sa.Select[Any]:
    return (
        sa.select(run_steps)
        .where(sql.among_param(run_steps.c.run_id, "b_ids"))
        .order_by(run_steps.c.seq)
    )


@functools.lru_cache(maxsize=16)
def _serving(pairs: frozenset[tuple[str, str]]) -> sa.ColumnElement[bool]:
    """Runs of a (workflow, version) in ``pairs``: one IN per set of versions (usually one)."""
    by_name: dict[str, set[str]] = {}
    for name, version in pairs:
        by_name.setdefault(name, set()).add(version)
    by_versions: dict[frozenset[str], list[str]] = {}
    for name, versions in by_name.items():
        by_versions.setdefault(frozenset(versions), []).append(name)
    r = runs.c
    return sa.or_(
        *(
            sa.and_(r.workflow.in_(sorted(names)), r.version.in_(sorted(versions)))
            for versions, names in by_versions.items()
        )
    )
