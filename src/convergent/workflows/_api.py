"""Starting, signalling, cancelling and reading runs.

`start`, `send` and `cancel` join the caller's transaction (they take its connection); `submit`,
`status`, `list_runs`, `run_steps_of` and `result` own their transactions or wait (they take the
Store). No function takes both.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent import tracing
from convergent.codec import encode_any
from convergent.errors import RunCancelled, RunFailed, RunNotFound
from convergent.ids import uuid7
from convergent.store import Store, direct, store_of
from convergent.store.schema import run_events, run_steps, runs
from convergent.workflows._batch import Batcher
from convergent.workflows._committer import DONE_CHANNEL, Finished, add_done_waiter, local_active
from convergent.workflows._operate import record_action
from convergent.workflows._registry import Workflow, registered
from convergent.workflows._statements import ACTIVE, FINAL, RUNS_CHANNEL
from convergent.workflows._worker import Worker, local_workers

__all__ = [
    "RUNS_CHANNEL",
    "RunInfo",
    "StepInfo",
    "cancel",
    "enqueue",
    "list_runs",
    "result",
    "run_steps_of",
    "send",
    "start",
    "status",
    "submit",
]


@dataclass(frozen=True)
class RunInfo:
    id: uuid.UUID
    workflow: str
    key: str
    queue: str
    status: str
    result: Any
    error: str | None
    attempts: int
    lease_owner: str | None
    next_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: str = "1"
    #: why no worker takes the run (the version it started with is served by none of them)
    waiting_for: str | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class StepInfo:
    seq: int
    kind: str
    name: str
    status: str
    attempts: int
    idempotency_key: str
    next_attempt_at: datetime | None
    result: Any
    error: str | None
    updated_at: datetime
    first_attempt_at: datetime | None = None


def _run_row(
    workflow: Workflow[Any, Any],
    args: tuple[Any, ...],
    key: str | None,
    queue: str | None,
    now: datetime,
) -> dict[str, Any]:
    run_id = uuid7()
    return {
        "id": run_id,
        "workflow": workflow.name,
        "key": key or str(run_id),
        "queue": queue or workflow.queue,
        "version": workflow.version,
        "status": "pending",
        # the trace of the request or message that started the run, for the run to continue
        "args": {"args": workflow.codec.encode_args(args), **_trace()},
        "attempts": 0,
        "next_at": now,
        "cancel_requested": False,
        "created_at": now,
        "updated_at": now,
    }


def _trace() -> dict[str, Any]:
    headers = tracing.carrier()
    return {"trace": headers} if headers else {}


async def start(
    conn: AsyncConnection,
    workflow: Workflow[Any, Any],
    *args: Any,
    key: str | None = None,
    queue: str | None = None,
) -> uuid.UUID:
    """Record a run of ``workflow`` in the caller's transaction, so the run exists exactly when
    the change that caused it does; the same ``key`` always gives the same run.

    The run is due at once by the clock of the connection's Store. Outside a transaction of
    your own, `submit` is faster.
    """
    store = store_of(conn)
    row = _run_row(workflow, args, key, queue, store.clock.now())
    ids = await _insert_runs(conn, [row])
    await store.notifier.notify(conn, RUNS_CHANNEL)
    return ids[0]


async def submit(
    store: Store,
    workflow: Workflow[Any, Any],
    *args: Any,
    key: str | None = None,
    queue: str | None = None,
) -> uuid.UUID:
    """Record a run of ``workflow`` in a transaction of its own; the same ``key`` always gives
    the same run.

    Concurrent submits share one round trip, and a worker of this process with a free slot
    takes the run at insert time (no claim, no wake-up).
    """
    return await _batchers(store).start(_run_row(workflow, args, key, queue, store.clock.now()))


async def _insert_runs(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    """Insert runs (a duplicate key keeps the first run) and return each row's run id."""
    sql = store_of(conn).sql
    stmt = sql.once(
        "workflows.insert_runs",
        lambda: (
            sql.insert(runs)
            .on_conflict_do_nothing(index_elements=["workflow", "key"])
            .returning(runs.c.id, runs.c.workflow, runs.c.key)
        ),
    )
    got = {(r.workflow, r.key): r.id for r in (await direct.execute(conn, stmt, rows)).all()}
    missing = [(r["workflow"], r["key"]) for r in rows if (r["workflow"], r["key"]) not in got]
    if missing:
        found = await conn.execute(
            sa.select(runs.c.id, runs.c.workflow, runs.c.key).where(
                sa.tuple_(runs.c.workflow, runs.c.key).in_(missing)
            )
        )
        got.update({(r.workflow, r.key): r.id for r in found.all()})
    return [got[(r["workflow"], r["key"])] for r in rows]


class _StoreBatchers:
    """Per-store batchers: concurrent starts and status reads share round trips."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.start: Batcher[dict[str, Any], uuid.UUID] = Batcher(self._start)
        self.status: Batcher[uuid.UUID, Any] = Batcher(self._status)

    async def _start(self, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
        # a worker of this process with a free slot takes the run at insert time: no claim
        workers = local_workers(self.store)
        taken: dict[uuid.UUID, Worker] = {}
        for row in rows:
            for worker in workers:
                if worker.reserve(row["workflow"], row["queue"], row["version"]):
                    taken[row["id"]] = worker
                    row.update(
                        status="running",
                        lease_owner=worker.id,
                        lease_until=row["created_at"] + worker.lease,
                        next_at=None,
                    )
                    break
            else:
                row.update(lease_owner=None, lease_until=None)
        try:
            if self.store.sql.one_statement_writes:
                ids = await self._insert_runs_at_once(rows, notify=len(taken) < len(rows))
            else:
                async with self.store.begin() as conn:
                    ids = await _insert_runs(conn, rows)
                    if len(taken) < len(rows):
                        await self.store.notifier.notify(conn, RUNS_CHANNEL)
        except BaseException:
            for row in rows:
                if row["id"] in taken:
                    taken[row["id"]].unreserve(row["queue"])
            raise
        for row, run_id in zip(rows, ids, strict=True):
            holder = taken.get(row["id"])
            if holder is None:
                continue
            if run_id == row["id"]:
                holder.adopt(run_id, row["workflow"], row["version"], row["args"], row["queue"])
            else:  # the key named an existing run; it is not ours to run
                holder.unreserve(row["queue"])
        return ids

    async def _insert_runs_at_once(
        self, rows: list[dict[str, Any]], notify: bool
    ) -> list[uuid.UUID]:
        """One autocommit statement for the whole batch."""
        stmt, params = self.store.sql.start_runs(rows)
        async with self.store.autocommit() as auto:
            found = await direct.execute(auto, stmt, params)
            got = {(r.workflow, r.key): r.id for r in found.all()}
            if len(got) < len(rows):  # a concurrent start of the same key committed meanwhile
                async with self.store.begin() as tx:
                    return await _insert_runs(tx, rows)
            if notify:
                await self.store.notifier.notify_now(auto, RUNS_CHANNEL)
        return [got[(r["workflow"], r["key"])] for r in rows]

    async def _status(self, ids: list[uuid.UUID]) -> list[Any]:
        async with self.store.statement() as conn:
            rows = (await conn.execute(sa.select(runs).where(runs.c.id.in_(set(ids))))).all()
        by_id = {row.id: row for row in rows}
        return [by_id.get(run_id) for run_id in ids]


_per_store: weakref.WeakKeyDictionary[Store, _StoreBatchers] = weakref.WeakKeyDictionary()


def _batchers(store: Store) -> _StoreBatchers:
    found = _per_store.get(store)
    if found is None:
        found = _per_store[store] = _StoreBatchers(store)
    return found


async def send(
    conn: AsyncConnection,
    run_id: uuid.UUID,
    event: str,
    payload: Any = None,
    *,
    dedupe_key: str | None = None,
) -> bool:
    """Deliver ``event`` to a run's `wait_for`, in the caller's transaction; False if this
    ``dedupe_key`` already came."""
    store = store_of(conn)
    now = store.clock.now()
    ins = store.sql.insert(run_events)
    inserted = await conn.execute(
        ins.values(
            id=uuid7(),
            run_id=run_id,
            name=event,
            dedupe_key=dedupe_key or str(uuid7()),
            payload=encode_any(payload),
            created_at=now,
        ).on_conflict_do_nothing(index_elements=["run_id", "name", "dedupe_key"])
    )
    if not inserted.rowcount:
        return False
    woke = await conn.execute(
        sa.update(runs).where(runs.c.id == run_id, runs.c.status.in_(ACTIVE)).values(next_at=now)
    )
    if (
        not woke.rowcount
        and await conn.scalar(sa.select(runs.c.id).where(runs.c.id == run_id)) is None
    ):
        raise RunNotFound(f"no run {run_id}")
    await store.notifier.notify(conn, RUNS_CHANNEL)
    return True


async def cancel(conn: AsyncConnection, run_id: uuid.UUID, *, actor: str | None = None) -> None:
    """Cancel a run, in the caller's transaction: at once if it never started, else its saga
    compensates first. With an ``actor``, the request is recorded in the run's history."""
    store = store_of(conn)
    if actor is not None:
        await record_action(
            conn, actor=actor, action="run.cancel", target_kind="run", target_id=str(run_id)
        )
    now = store.clock.now()
    r = runs.c
    unstarted = await conn.execute(
        sa.update(runs)
        .where(r.id == run_id, r.status == "pending", r.lease_owner.is_(None))
        .values(
            status="cancelled",
            cancel_requested=True,  # on request, not by an error: never resumed
            next_at=None,
            error="cancelled before it started",
            updated_at=now,
        )
    )
    if unstarted.rowcount:
        await store.notifier.notify(conn, DONE_CHANNEL)
        return
    active = await conn.execute(
        sa.update(runs)
        .where(r.id == run_id, r.status.in_(ACTIVE))
        .values(cancel_requested=True, next_at=now, updated_at=now)
    )
    if not active.rowcount and await conn.scalar(sa.select(r.id).where(r.id == run_id)) is None:
        raise RunNotFound(f"no run {run_id}")
    await store.notifier.notify(conn, RUNS_CHANNEL)


async def status(store: Store, run_id: uuid.UUID) -> RunInfo:
    """The run as stored now (concurrent calls share one read)."""
    row = await _batchers(store).status(run_id)
    if row is None:
        raise RunNotFound(f"no run {run_id}")
    return _info(row)


async def list_runs(
    store: Store,
    *,
    status_in: list[str] | None = None,
    workflow: str | None = None,
    limit: int = 50,
) -> list[RunInfo]:
    stmt = sa.select(runs).order_by(runs.c.created_at.desc()).limit(limit)
    if status_in:
        stmt = stmt.where(runs.c.status.in_(status_in))
    if workflow:
        stmt = stmt.where(runs.c.workflow == workflow)
    async with store.read() as conn:
        return [_info(row) for row in (await conn.execute(stmt)).all()]


async def run_steps_of(store: Store, run_id: uuid.UUID) -> list[StepInfo]:
    """The checkpoints of a run, in order."""
    c = run_steps.c
    async with store.read() as conn:
        rows = (
            await conn.execute(sa.select(run_steps).where(c.run_id == run_id).order_by(c.seq))
        ).all()
    return [
        StepInfo(
            r.seq,
            r.kind,
            r.name,
            r.status,
            r.attempts,
            r.idempotency_key,
            r.next_attempt_at,
            r.result,
            r.error,
            r.updated_at,
            r.first_attempt_at,
        )
        for r in rows
    ]


async def result(store: Store, run_id: uuid.UUID, *, wait: float = 0.0, poll: float = 1.0) -> Any:
    """The run's result; waits up to ``wait`` seconds for it to finish.

    Raises `RunFailed` / `RunCancelled` if it ended without success, TimeoutError if still running.
    """
    deadline = time.monotonic() + wait
    done: asyncio.Future[Finished] = asyncio.get_running_loop().create_future()

    def on_done(finished: Finished) -> None:
        if not done.done():
            done.set_result(finished)

    remove = add_done_waiter(run_id, on_done)
    try:
        # a run held by a worker of this process reports its end here: no reads, no LISTEN
        loop = asyncio.get_running_loop()
        while run_id in local_active and not done.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"run {run_id} is still running")
            # woken by the end or by the next poll (cheaper than asyncio.wait per call)
            wake = loop.create_future()
            done.add_done_callback(functools.partial(_wake, wake))
            timer = loop.call_later(min(remaining, poll), _wake, wake)
            await wake
            timer.cancel()
        if done.done():
            f = done.result()
            return _outcome(run_id, f.workflow, f.status, f.result, f.error)
        async with store.notifier.subscribe(DONE_CHANNEL) as sub:
            # a run held by a worker of this process reports its end here; no read needed
            info = None if run_id in local_active else await status(store, run_id)
            while info is None or not info.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"run {run_id} is still {info.status if info else 'running'}"
                    )
                hint = asyncio.ensure_future(sub.wait(min(remaining, poll)))
                await asyncio.wait([hint, done], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
                hint.cancel()
                if done.done():
                    f = done.result()
                    return _outcome(run_id, f.workflow, f.status, f.result, f.error)
                if run_id not in local_active:
                    info = await status(store, run_id)
            return _outcome(run_id, info.workflow, info.status, info.result, info.error)
    finally:
        remove()


def _wake(future: asyncio.Future[None], *_: Any) -> None:
    if not future.done():
        future.set_result(None)


def _outcome(run_id: uuid.UUID, workflow: str, state: str, value: Any, error: str | None) -> Any:
    if state == "completed":
        declared = registered().get(workflow)  # its annotated result type, when known here
        return value if declared is None else declared.codec.result.decode(value)
    if state == "cancelled":
        raise RunCancelled(f"run {run_id} was cancelled: {error}", run_id=str(run_id))
    raise RunFailed(f"run {run_id} failed: {error}", run_id=str(run_id))


def _info(row: Any) -> RunInfo:
    return RunInfo(
        row.id,
        row.workflow,
        row.key,
        row.queue,
        row.status,
        row.result,
        row.error,
        row.attempts,
        row.lease_owner,
        row.next_at,
        row.created_at,
        row.updated_at,
        row.version,
        row.waiting_for,
    )


async def enqueue(
    conn: AsyncConnection,
    workflow: Workflow[Any, Any],
    *args: Any,
    priority: int = 0,
    key: str | None = None,
    queue: str | None = None,
) -> uuid.UUID:
    """`start` a run, in the caller's transaction, with a ``priority``: in a fleet queue,
    runs of higher priority are claimed first."""
    run_id = await start(conn, workflow, *args, key=key, queue=queue)
    if priority:
        await conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.status == "pending")
            .values(priority=priority)
        )
    return run_id
