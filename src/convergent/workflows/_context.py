"""Replay: a run re-executes its workflow function; recorded checkpoints answer instead of work.

Positions (``seq``) count every durable call in order. A resumed run must ask for the same kind
and name at each position, or it raises `NonDeterminism`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import (
    NonDeterminism,
    PermanentError,
    RunCancelled,
    StepFailed,
    WorkflowError,
)
from convergent.faults import fault_point, register
from convergent.ids import uuid7
from convergent.store import Store, direct
from convergent.store.schema import dead_letters, run_events, run_steps
from convergent.workflows._committer import Committer
from convergent.workflows._metrics import Attempt, dead_lettered, retried
from convergent.workflows._statements import HELD, Statements

if TYPE_CHECKING:
    from convergent.workflows._registry import Step, Workflow

T = TypeVar("T")

__all__ = [
    "Interrupted",
    "LeaseLost",
    "RunContext",
    "StepContext",
    "StepRecord",
    "Suspend",
    "WorkflowContext",
    "current_run",
    "hold",
]

log = logging.getLogger("convergent.workflows")

AFTER_STEP = register(
    "workflow.after_step_before_checkpoint", "a step's effect happened but its result is not saved"
)
AFTER_CHECKPOINT = register(
    "workflow.after_checkpoint", "a step's result is saved; the run has not moved on"
)
BEFORE_COMPENSATION_CHECKPOINT = register(
    "workflow.before_compensation_checkpoint", "a compensation ran but is not recorded"
)
BEFORE_STEP = register(
    "workflow.before_step_call", "the step's start is recorded; the call may or may not have left"
)

_current: contextvars.ContextVar[RunContext] = contextvars.ContextVar("convergent_run")


def current_run() -> RunContext:
    try:
        return _current.get()
    except LookupError:
        raise WorkflowError("steps can only be called from inside a running workflow") from None


# BaseException so that `except Exception` in user code cannot swallow it
class Suspend(BaseException):
    """Unwinds a run that must wait (timer, retry delay, event); ``until`` None waits for a send."""

    def __init__(self, until: datetime | None) -> None:
        super().__init__(until)
        self.until = until


class LeaseLost(asyncio.CancelledError):
    """Another worker holds the run now (this one was cut off past its lease): stop quietly and
    write nothing more; the holder replays from the checkpoints."""


class Interrupted(BaseException):
    """The engine could not record the run's progress (the database went away): the run stops
    here, unharmed, and resumes from its checkpoints later. Not an ``Exception``, so neither a
    saga nor workflow code mistakes a database restart for the business failing."""


class ChildSupport(Protocol):
    """What `convergent.workflows.children` (built on this module) plugs in for `child`."""

    async def await_child(
        self,
        ctx: RunContext,
        workflow: Workflow[Any, Any] | str,
        args: tuple[Any, ...],
        *,
        queue: str | None = None,
    ) -> Any: ...

    async def start_detached(
        self,
        ctx: RunContext,
        workflow: Workflow[Any, Any] | str,
        args: tuple[Any, ...],
        *,
        queue: str | None = None,
    ) -> uuid.UUID: ...


#: set when convergent.workflows.children is imported (the package imports it)
child_support: ChildSupport | None = None


def _children() -> ChildSupport:
    if child_support is None:
        raise WorkflowError("child runs need convergent.workflows.children: import it")
    return child_support


async def hold(conn: AsyncConnection, run_id: uuid.UUID, owner: str) -> None:
    """Go on only while ``owner`` holds the run; its row stays share-locked to the commit, so a
    takeover waits for this transaction or has already won (then ``LeaseLost``).

    As the transaction's first statement on PostgreSQL it goes with the BEGIN: one round trip."""
    if not await direct.count_first(conn, HELD, {"h_run": run_id, "h_owner": owner}):
        raise LeaseLost(f"run {run_id} is held by another worker now")


@contextlib.asynccontextmanager
async def _recording() -> AsyncIterator[None]:
    try:
        yield
    except Exception as exc:
        raise Interrupted(exc) from exc


@dataclass
class StepRecord:
    seq: int
    kind: str
    name: str
    status: str
    attempts: int = 0
    next_attempt_at: datetime | None = None
    result: Any = None
    error: str | None = None
    first_attempt_at: datetime | None = None


@dataclass(frozen=True)
class StepContext:
    """What a step knows about itself; pass ``idempotency_key`` to the system you call.

    ``store`` is the worker's Store, for steps that write to the same database; write through
    ``transaction()`` so the writes are fenced by the run's lease.
    """

    run_id: uuid.UUID
    name: str
    seq: int
    attempt: int
    idempotency_key: str
    store: Store
    owner: str | None = None  # the worker holding the run; None outside a worker

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that commits only while this worker still holds the run.

        A worker cut off past its lease keeps running the step in memory; once another worker
        has taken the run over, this raises ``LeaseLost`` (the step stops, nothing is written),
        so a state transition or an outbox row of the step is never committed twice.
        """
        async with self.store.begin() as conn:
            if self.owner is not None:
                await hold(conn, self.run_id, self.owner)
            yield conn


@dataclass
class RunContext:
    """The state of one run held by a worker. Workflows see it as `WorkflowContext`."""

    run_id: uuid.UUID
    workflow: str
    store: Store
    committer: Committer
    statements: Statements
    owner: str
    records: dict[int, StepRecord]
    cancel_requested: bool = False
    compensating: bool = False
    _seq: int = field(default=0)
    # the last step's checkpoint, awaited before anything else durable happens
    _pending: asyncio.Future[None] | None = field(default=None)

    async def settle(self) -> None:
        """Wait until the last checkpoint is committed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            try:  # as `_recording`, inline: this runs before every durable call
                await pending
            except Exception as exc:
                raise Interrupted(exc) from exc
            fault_point(AFTER_CHECKPOINT)

    # -- public, for workflow code ---------------------------------------------------------

    def now(self) -> datetime:
        return self.store.clock.now()

    async def sleep(self, seconds: float) -> None:
        """Sleep durably: a restart keeps the wake-up time; the worker is free meanwhile."""
        await self._timer(lambda: self.now() + timedelta(seconds=seconds))

    async def sleep_until(self, when: datetime) -> None:
        await self._timer(lambda: when)

    async def wait_for(self, event: str, timeout: float | None = None) -> Any:
        """The payload of the next `send` of ``event`` to this run, or None after ``timeout``."""
        await self.settle()
        seq, rec = self._position("wait", event)
        if rec is not None and rec.status == "completed":
            return rec.result["payload"] if rec.result.get("received") else None
        self._check_cancel()
        if rec is not None:
            deadline = _parse(rec.result.get("deadline"))
        else:
            deadline = None if timeout is None else self.now() + timedelta(seconds=timeout)
        payload, received = await self._take_event(seq, event)
        if received:
            return payload
        if deadline is not None and self.now() >= deadline:
            await self._save(seq, "wait", event, "completed", result={"received": False})
            return None
        if rec is None:
            await self._save(seq, "wait", event, "waiting", result={"deadline": _iso(deadline)})
        raise Suspend(deadline)

    async def patched(self, change_id: str) -> bool:
        """True where this run takes the code changed under ``change_id``; False for a run that
        had already passed this point on the code before the change.

        ``if await ctx.patched("add-fraud-check"): await fraud_check(order)`` lets a deploy
        change a workflow under runs in flight (Temporal's ``patched``). Once no run from
        before the change is left, remove the call and keep the new code.
        """
        await self.settle()
        ahead = self._seq + 1  # markers of changes the code no longer asks about may come first
        while (rec := self.records.get(ahead)) is not None and rec.kind == "patch":
            if rec.name == change_id:
                self._seq = ahead
                return True
            ahead += 1
        if self.records.get(self._seq + 1) is not None:
            return False  # recorded history goes on without the change: keep the old path
        self._seq += 1
        self._mark(self._seq, "patch", change_id)
        return True

    def _mark(self, seq: int, kind: str, name: str) -> None:
        """Record a marker position; like a step's result, the next durable call awaits it."""
        params = _step_params(
            self.run_id,
            seq,
            kind,
            name,
            "completed",
            f"{self.run_id}:{seq}:{name}",
            0,
            None,
            None,
            None,
            self.now(),
            self.owner,
        )
        self.records[seq] = StepRecord(seq, kind, name, "completed")
        self._pending = self.committer.enqueue(self.statements.save_step, params)

    @overload
    async def child(
        self, workflow: Workflow[Any, T], *args: Any, queue: str | None = None
    ) -> T: ...

    @overload
    async def child(self, workflow: str, *args: Any, queue: str | None = None) -> Any: ...

    async def child(
        self, workflow: Workflow[Any, Any] | str, *args: Any, queue: str | None = None
    ) -> Any:
        """Start ``workflow(*args)`` as a child run, once, and wait durably for its result
        (`convergent.workflows.children`); its failure raises `ChildFailed` here."""
        return await _children().await_child(self, workflow, args, queue=queue)

    async def start_child(
        self, workflow: Workflow[Any, Any] | str, *args: Any, queue: str | None = None
    ) -> uuid.UUID:
        """Start ``workflow(*args)`` as a detached child run, once, and return its id without
        waiting; it is not cancelled with this run."""
        return await _children().start_detached(self, workflow, args, queue=queue)

    async def begin_compensation(self) -> None:
        """Mark the run compensating; steps called from now on are compensations."""
        if self.compensating:
            return
        await self.settle()
        self.compensating = True
        # a marker position says the saga undid the run's steps (a resume must not go on from
        # undone work); a run that began compensating before markers existed has none
        rec = self.records.get(self._seq + 1)
        if rec is None:
            self._seq += 1
            self._mark(self._seq, "compensate", "saga")
            await self.settle()
        elif rec.kind == "compensate":
            self._seq += 1
        async with _recording():
            await self._write_status("compensating")

    async def _write_status(self, status: str) -> None:
        await self.committer.write(
            self.statements.set_status,
            {
                "b_id": self.run_id,
                "b_owner": self.owner,
                "b_status": status,
                "b_now": self.now(),
            },
        )

    # -- steps -----------------------------------------------------------------------------

    async def run_step(
        self, step: Step[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        codec = step.codec  # an annotation that cannot be stored fails here, before any effect
        await self.settle()
        seq, rec = self._position("step", step.name)
        if rec is not None and rec.status == "completed":
            return codec.result.decode(rec.result)
        if rec is not None and rec.status == "failed":
            if self.compensating:
                return None  # a dead-lettered compensation: already reported
            raise StepFailed(f"step {step.name} failed: {rec.error}", step=step.name)
        if not self.compensating:
            self._check_cancel()
        attempts = rec.attempts if rec is not None else 0
        first_at = rec.first_attempt_at if rec is not None else None
        if rec is not None and rec.next_attempt_at is not None and rec.next_attempt_at > self.now():
            raise Suspend(rec.next_attempt_at)
        key = f"{self.run_id}:{seq}:{step.name}"
        first_at = first_at or self.now()
        while True:
            attempts += 1
            sctx = StepContext(self.run_id, step.name, seq, attempts, key, self.store, self.owner)
            attempt = Attempt(self.workflow, step.name, attempts, key, self.compensating)
            try:
                if step.reconcile is not None:
                    if attempts > 1:  # an earlier attempt may have taken effect: ask first
                        found = await step.reconcile(sctx, *args, **kwargs)
                        if found is not None:
                            attempt.end("reconciled")
                            return await self._complete(seq, step, key, attempts, found, first_at)
                    await self._save(
                        seq,
                        "step",
                        step.name,
                        "started",
                        key=key,
                        attempts=attempts,
                        first_attempt_at=first_at,
                    )
                    fault_point(BEFORE_STEP)
                value = await step.fn(sctx, *args, **kwargs)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                retry_after = getattr(exc, "retry_after", None)
                when = None
                if not isinstance(exc, (PermanentError, WorkflowError)):
                    when = step.retry.next_attempt_at(
                        attempts, self.now(), first_attempt_at=first_at, retry_after=retry_after
                    )
                if when is None:
                    attempt.end("failed", exc)
                    return await self._give_up(seq, step, key, attempts, error, args, exc)
                attempt.end("retrying", exc)
                retried(self.workflow, step.name)
                await self._save(
                    seq,
                    "step",
                    step.name,
                    "retrying",
                    key=key,
                    attempts=attempts,
                    next_attempt_at=when,
                    error=error,
                    first_attempt_at=first_at,
                )
                if when > self.now():
                    raise Suspend(when) from None
                continue
            attempt.end("completed")
            if self.compensating:
                fault_point(BEFORE_COMPENSATION_CHECKPOINT)
            else:
                fault_point(AFTER_STEP)
            return await self._complete(seq, step, key, attempts, value, first_at)

    async def _complete(
        self,
        seq: int,
        step: Step[Any, Any],
        key: str,
        attempts: int,
        result: Any,
        first_at: datetime | None,
    ) -> Any:
        # not awaited here: pure workflow code may run on; the next durable call (or the end
        # of the run, whose write commits after this one) waits for it
        name = step.name
        value = step.codec.result.encode(result)
        params = _step_params(
            self.run_id,
            seq,
            "step",
            name,
            "completed",
            key,
            attempts,
            None,
            value,
            None,
            self.now(),
            self.owner,
            first_at,  # with updated_at, when the step ran (the console's timeline shows it)
        )
        self.records[seq] = StepRecord(
            seq, "step", name, "completed", attempts, None, value, None, first_at
        )
        self._pending = self.committer.enqueue(self.statements.save_step, params)
        return step.codec.result.decode(value)  # what a replay will see

    async def _give_up(
        self,
        seq: int,
        step: Step[Any, Any],
        key: str,
        attempts: int,
        error: str,
        args: tuple[Any, ...],
        exc: Exception,
    ) -> Any:
        if not self.compensating:
            await self._save(
                seq, "step", step.name, "failed", key=key, attempts=attempts, error=error
            )
            raise StepFailed(f"step {step.name} failed: {error}", step=step.name) from exc
        # a compensation that cannot succeed: a person must look at it
        now = self.now()
        async with _recording(), self.store.begin() as conn:
            await self._hold(conn)
            await conn.execute(
                self.statements.save_step,
                _step_params(
                    self.run_id,
                    seq,
                    "step",
                    step.name,
                    "failed",
                    key,
                    attempts,
                    None,
                    None,
                    error,
                    now,
                    self.owner,
                ),
            )
            await conn.execute(
                sa.insert(dead_letters).values(
                    id=uuid7(),
                    source="workflow",
                    source_ref=f"{self.run_id}:{seq}",
                    name=step.name,
                    key=key,
                    payload={"workflow": self.workflow, "args": step.codec.encode_args(args)},
                    reason=error,
                    attempts=attempts,
                    status="dead",
                    created_at=now,
                )
            )
        dead_lettered(self.workflow, step.name)
        log.error(
            "compensation %s of run %s dead-lettered after %d attempts: %s",
            step.name,
            self.run_id,
            attempts,
            error,
            extra={"run_id": str(self.run_id), "workflow": self.workflow, "step": step.name},
        )
        return None

    # -- plumbing --------------------------------------------------------------------------

    def _skip_patches(self) -> None:
        """Pass the change markers this code no longer asks about (a ``patched`` call removed
        once every run from before the change was done)."""
        while (rec := self.records.get(self._seq + 1)) is not None and rec.kind == "patch":
            self._seq += 1

    def _position(self, kind: str, name: str) -> tuple[int, StepRecord | None]:
        assert self._pending is None, "settle() before the next durable call"
        self._skip_patches()
        self._seq += 1
        rec = self.records.get(self._seq)
        if rec is not None and (rec.kind, rec.name) != (kind, name):
            raise NonDeterminism(
                f"run {self.run_id} recorded {rec.kind} {rec.name!r} at position {self._seq} but "
                f"now asks for {kind} {name!r}: workflow code must make the same calls in the same "
                "order on every replay (guard a change with `await ctx.patched(...)`, or register "
                "it as a new version of the workflow beside the old one)",
                seq=self._seq,
            )
        return self._seq, rec

    async def _hold(self, conn: AsyncConnection) -> None:
        """Fence a transaction of several writes: go on only while this worker holds the run."""
        await hold(conn, self.run_id, self.owner)

    def _check_cancel(self) -> None:
        if self.cancel_requested and not self.compensating:
            raise RunCancelled(f"run {self.run_id} was cancelled")

    async def _timer(self, when: Any) -> None:
        await self.settle()
        seq, rec = self._position("sleep", "sleep")
        if rec is not None:
            until = _parse(rec.result["until"])
        else:
            self._check_cancel()
            until = when()
            await self._save(seq, "sleep", "sleep", "waiting", result={"until": _iso(until)})
        if until is not None and self.now() >= until:
            return
        self._check_cancel()
        raise Suspend(until)

    async def _take_event(self, seq: int, event: str) -> tuple[Any, bool]:
        ev = run_events.c
        async with _recording(), self.store.begin() as conn:
            await self._hold(conn)  # an event taken by a worker that lost the run would be lost
            row = (
                await conn.execute(
                    sa.select(ev.id, ev.payload)
                    .where(ev.run_id == self.run_id, ev.name == event, ev.consumed_seq.is_(None))
                    .order_by(ev.created_at, ev.id)
                    .limit(1)
                )
            ).first()
            if row is None:
                return None, False
            await conn.execute(
                sa.update(run_events).where(ev.id == row.id).values(consumed_seq=seq)
            )
            await conn.execute(
                self.statements.save_step,
                _step_params(
                    self.run_id,
                    seq,
                    "wait",
                    event,
                    "completed",
                    f"{self.run_id}:{seq}:{event}",
                    1,
                    None,
                    {"received": True, "payload": row.payload},
                    None,
                    self.now(),
                    self.owner,
                ),
            )
        return row.payload, True

    async def _save(
        self,
        seq: int,
        kind: str,
        name: str,
        status: str,
        *,
        key: str | None = None,
        attempts: int = 0,
        next_attempt_at: datetime | None = None,
        result: Any = None,
        error: str | None = None,
        first_attempt_at: datetime | None = None,
    ) -> None:
        params = _step_params(
            self.run_id,
            seq,
            kind,
            name,
            status,
            key or f"{self.run_id}:{seq}:{name}",
            attempts,
            next_attempt_at,
            result,
            error,
            self.now(),
            self.owner,
            first_attempt_at,
        )
        self.records[seq] = StepRecord(
            seq, kind, name, status, attempts, next_attempt_at, result, error, first_attempt_at
        )
        async with _recording():
            await self.committer.write(self.statements.save_step, params)


#: what workflow functions receive as their first argument
WorkflowContext = RunContext


def _step_params(
    run_id: uuid.UUID,
    seq: int,
    kind: str,
    name: str,
    status: str,
    key: str,
    attempts: int,
    next_attempt_at: datetime | None,
    result: Any,
    error: str | None,
    now: datetime,
    owner: str,
    first_attempt_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "owner": owner,  # the write is fenced: it lands only while this worker holds the run
        "run_id": run_id,
        "seq": seq,
        "kind": kind,
        "name": name,
        "status": status,
        "idempotency_key": key,
        "attempts": attempts,
        "next_attempt_at": next_attempt_at,
        "result": result,
        "error": error,
        "updated_at": now,
        "first_attempt_at": first_attempt_at,
    }


def record_from_row(row: Any) -> StepRecord:
    return StepRecord(
        row.seq,
        row.kind,
        row.name,
        row.status,
        row.attempts,
        row.next_attempt_at,
        row.result,
        row.error,
        row.first_attempt_at,
    )


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _parse(raw: str | None) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(raw)


def run_steps_columns() -> list[Any]:
    c = run_steps.c
    return [
        c.run_id,
        c.seq,
        c.kind,
        c.name,
        c.status,
        c.attempts,
        c.next_attempt_at,
        c.result,
        c.error,
        c.first_attempt_at,
    ]
