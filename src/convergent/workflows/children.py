"""Child runs: a workflow starts another and waits durably for its result (``ctx.child``).

The child is a run of its own (key ``child:PARENT:SEQ``), started in the same transaction that
records the link ``convergent_run_children``; it survives the crash of the parent's worker, and a
replayed parent finds the same child. While it waits the parent holds no worker slot: the
`ChildWaker` loop (part of `convergent.runtime.standard_loops`) makes the parent due again when
the child ends, and the parent's replay records the child's result as its checkpoint.

Resuming a parent that failed because its child failed (`convergent runs resume`) starts the
child again, as a new run; a child resumed first and still going, or completed, is kept.

Cancellation: cancelling a parent cancels the children it is still waiting for (their sagas
compensate as on any cancel), then the parent ends cancelled (its own saga compensating).
Children that already ended keep their effects; undo them with the parent's saga. A child
started with ``ctx.start_child`` is detached: the parent does not wait for it, and it is not
cancelled with the parent.
A child that fails or is cancelled raises `ChildFailed` (a `StepFailed`) in the parent.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from convergent.errors import ChildFailed, RunCancelled, UnknownWorkflow
from convergent.faults import fault_point, register
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import run_children, runs
from convergent.workflows import _context
from convergent.workflows._api import cancel, start
from convergent.workflows._committer import DONE_CHANNEL
from convergent.workflows._context import RunContext, StepRecord, Suspend, _recording, _step_params
from convergent.workflows._registry import Workflow, registered
from convergent.workflows._statements import ACTIVE, FINAL, RUNS_CHANNEL

__all__ = ["ChildWaker", "await_child", "start_detached", "wake_parents"]

log = logging.getLogger("convergent.workflows.children")

CHILD_STARTED = register(
    "workflow.after_child_started",
    "a child run and its link are committed; the parent's checkpoint of it is not",
)


def _resolve(workflow: Workflow[Any, Any] | str) -> Workflow[Any, Any]:
    if not isinstance(workflow, str):
        return workflow
    found = registered().get(workflow)
    if found is None:
        raise UnknownWorkflow(
            f"child workflow {workflow!r} is not registered in this process: import the module "
            "that defines it in every worker (convergent worker --import module), or pass the "
            "Workflow object itself"
        )
    return found


async def await_child(
    ctx: RunContext,
    workflow: Workflow[Any, Any] | str,
    args: tuple[Any, ...],
    *,
    queue: str | None = None,
) -> Any:
    """Start ``workflow(*args)`` as a child of ``ctx``'s run (once) and return its result."""
    wf = _resolve(workflow)  # before anything is recorded: a bad name loses nothing
    await ctx.settle()
    seq, rec = ctx._position("child", wf.name)
    if rec is not None and rec.status == "completed":
        return wf.codec.result.decode(rec.result)
    if rec is not None and rec.status == "failed":
        raise ChildFailed(f"child {wf.name} failed: {rec.error}", step=wf.name)
    if rec is None:
        ctx._check_cancel()
        child_id = await _start_child(ctx, seq, wf, args, queue)
    else:
        child_id = uuid.UUID(rec.result["run_id"])
        if ctx.cancel_requested and not ctx.compensating:
            await _cancel_child(ctx, seq, child_id)
            raise RunCancelled(f"run {ctx.run_id} was cancelled (and its child {child_id})")
    async with _recording(), ctx.store.read() as conn:
        child = (
            await conn.execute(
                sa.select(runs.c.status, runs.c.result, runs.c.error).where(runs.c.id == child_id)
            )
        ).first()
    if child is None or child.status not in FINAL:
        raise Suspend(None)  # the ChildWaker makes this run due when the child ends
    return await _collect(ctx, seq, wf, child_id, child.status, child.result, child.error)


async def start_detached(
    ctx: RunContext,
    workflow: Workflow[Any, Any] | str,
    args: tuple[Any, ...],
    *,
    queue: str | None = None,
) -> uuid.UUID:
    """Start ``workflow(*args)`` as a detached child of ``ctx``'s run (once); its id."""
    wf = _resolve(workflow)
    await ctx.settle()
    seq, rec = ctx._position("detached", wf.name)
    if rec is not None:
        return uuid.UUID(rec.result["run_id"])
    ctx._check_cancel()
    now = ctx.now()
    async with _recording(), ctx.store.begin() as conn:
        await ctx._hold(conn)
        child_id = await start(conn, wf, *args, key=f"child:{ctx.run_id}:{seq}", queue=queue)
        result = {"run_id": str(child_id)}
        params = _step_params(
            ctx.run_id,
            seq,
            "detached",
            wf.name,
            "completed",
            f"{ctx.run_id}:{seq}:{wf.name}",
            1,
            None,
            result,
            None,
            now,
            ctx.owner,
        )
        await conn.execute(ctx.statements.save_step, params)  # with the start, or neither
    ctx.records[seq] = StepRecord(seq, "detached", wf.name, "completed", 1, None, result)
    return child_id


async def _start_child(
    ctx: RunContext, seq: int, wf: Workflow[Any, Any], args: tuple[Any, ...], queue: str | None
) -> uuid.UUID:
    now = ctx.now()
    k = run_children.c
    mine = sa.and_(k.parent_id == ctx.run_id, k.seq == seq)
    async with _recording(), ctx.store.begin() as conn:
        await ctx._hold(conn)  # fenced: a parent taken over by another worker starts nothing
        known = (
            await conn.execute(
                sa.select(k.child_id, runs.c.status)
                .join(runs, runs.c.id == k.child_id, isouter=True)
                .where(mine)
            )
        ).first()
        if known is None:
            child_id = await start(conn, wf, *args, key=f"child:{ctx.run_id}:{seq}", queue=queue)
            ins = ctx.store.sql.insert(run_children).values(
                parent_id=ctx.run_id, seq=seq, child_id=child_id, status="waiting", created_at=now
            )
            await conn.execute(ins.on_conflict_do_nothing(index_elements=["parent_id", "seq"]))
        else:
            # the parent was resumed after this child ended: one that failed or was cancelled
            # runs again as a new child; one still going (resumed itself) or done is kept
            child_id = known.child_id
            if known.status in ("failed", "cancelled"):
                again = f"child:{ctx.run_id}:{seq}:{uuid7().hex[-12:]}"
                child_id = await start(conn, wf, *args, key=again, queue=queue)
            await conn.execute(
                sa.update(run_children).where(mine).values(child_id=child_id, status="waiting")
            )
    fault_point(CHILD_STARTED)
    await ctx._save(seq, "child", wf.name, "waiting", result={"run_id": str(child_id)})
    return child_id


async def _collect(
    ctx: RunContext,
    seq: int,
    wf: Workflow[Any, Any],
    child_id: uuid.UUID,
    state: str,
    value: Any,
    error: str | None,
) -> Any:
    ok = state == "completed"
    reason = None if ok else f"child run {child_id} {state}: {error}"
    now = ctx.now()
    params = _step_params(
        ctx.run_id,
        seq,
        "child",
        wf.name,
        "completed" if ok else "failed",
        f"{ctx.run_id}:{seq}:{wf.name}",
        1,
        None,
        value if ok else {"run_id": str(child_id)},
        reason,
        now,
        ctx.owner,
    )
    async with _recording(), ctx.store.begin() as conn:
        await ctx._hold(conn)  # fenced: only while this worker holds the parent
        await conn.execute(ctx.statements.save_step, params)
        await conn.execute(
            sa.update(run_children)
            .where(run_children.c.parent_id == ctx.run_id, run_children.c.seq == seq)
            .values(status="done")
        )
    ctx.records[seq] = StepRecord(
        seq, "child", wf.name, params["status"], 1, None, params["result"], reason
    )
    if not ok:
        raise ChildFailed(f"child {wf.name} failed: {reason}", step=wf.name)
    return wf.codec.result.decode(value)


async def _cancel_child(ctx: RunContext, seq: int, child_id: uuid.UUID) -> None:
    async with _recording(), ctx.store.begin() as conn:
        await ctx._hold(conn)
        await cancel(conn, child_id)
        await conn.execute(
            sa.update(run_children)
            .where(run_children.c.parent_id == ctx.run_id, run_children.c.seq == seq)
            .values(status="cancelled")
        )


async def wake_parents(store: Store) -> tuple[int, int]:
    """Make due the parents whose awaited child ended; returns (woken, links still waiting)."""
    now = store.clock.now()
    k = run_children.c
    child = runs.alias("child")
    ended = (
        sa.select(k.parent_id)
        .join(child, child.c.id == k.child_id)
        .where(k.status == "waiting", child.c.status.in_(FINAL))
    )
    parent_ended = sa.exists().where(runs.c.id == k.parent_id, runs.c.status.in_(FINAL))
    # most looks find nothing to do: no write lock for them, no BEGIN/COMMIT round trips
    async with store.statement() as conn:
        waiting = int(
            await conn.scalar(
                sa.select(sa.func.count()).select_from(run_children).where(k.status == "waiting")
            )
            or 0
        )
        if not waiting:
            return 0, 0
        todo = await conn.scalar(
            sa.select(
                sa.or_(
                    ended.exists(),
                    sa.select(k.parent_id).where(k.status == "waiting", parent_ended).exists(),
                )
            )
        )
        if not todo:
            return 0, waiting
    async with store.begin() as conn:
        # a parent that ended some other way (dead-lettered, say) waits for nothing any more
        orphaned = await conn.execute(
            sa.update(run_children)
            .where(k.status == "waiting", parent_ended)
            .values(status="orphaned")
        )
        waiting -= orphaned.rowcount or 0
        woken = await conn.execute(
            sa.update(runs)
            .where(
                runs.c.id.in_(ended),
                runs.c.status.in_(ACTIVE),
                sa.or_(runs.c.next_at.is_(None), runs.c.next_at > now),
            )
            .values(next_at=now)
        )
        if woken.rowcount:
            await store.notifier.notify(conn, RUNS_CHANNEL)
    return woken.rowcount or 0, max(waiting, 0)


@dataclass
class ChildWaker:
    """Wakes parents when their child ends: on each run's end while children are awaited,
    else every ``poll_interval`` seconds."""

    store: Store
    poll_interval: float = 1.0
    #: the shortest time between two looks while children are awaited
    min_gap: float = 0.02
    woken: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with self.store.notifier.subscribe(DONE_CHANNEL) as sub:
            while not stop.is_set():
                waiting = 0
                try:
                    woken, waiting = await wake_parents(self.store)
                    self.woken += woken
                except Exception:  # the database is away: the next round tries again
                    log.exception("waking parent runs failed; trying again")
                waits: list[asyncio.Future[bool]] = [asyncio.ensure_future(stop.wait())]
                if waiting:  # a run's end may be a child's: look again then
                    waits.append(asyncio.ensure_future(sub.wait(self.poll_interval)))
                _, pending = await asyncio.wait(
                    waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
                )
                for p in pending:
                    p.cancel()
                if waiting and not stop.is_set():  # a busy fleet ends runs all the time
                    await asyncio.sleep(self.min_gap)


class _ChildSupport:
    await_child = staticmethod(await_child)
    start_detached = staticmethod(start_detached)


_context.child_support = _ChildSupport()  # RunContext.child / start_child call in here
