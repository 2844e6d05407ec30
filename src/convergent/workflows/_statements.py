"""The few write statements a worker sends, built once per database so a batch can reuse them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from convergent.store import Dialect
from convergent.store.schema import run_steps, runs

__all__ = ["ACTIVE", "FINAL", "HELD", "RUNS_CHANNEL", "Statements", "held_row", "statements_for"]

RUNS_CHANNEL = "convergent_runs"
ACTIVE = ("pending", "running", "compensating")
FINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Statements:
    save_step: Any  # upsert a checkpoint; a completed one is never overwritten
    finish_run: sa.Update  # final state, only while we hold the lease
    suspend_run: sa.Update  # release until ``until``, unless a wake-up came meanwhile
    set_status: sa.Update


STEP_FIELDS = (
    "run_id",
    "seq",
    "kind",
    "name",
    "status",
    "idempotency_key",
    "attempts",
    "next_attempt_at",
    "result",
    "error",
    "updated_at",
    "first_attempt_at",
)


def held_row(run_id: Any, owner: Any) -> sa.Select[Any]:
    """The run's row while it is leased to ``owner`` (the fencing condition of every write of a
    run); share-locked to the commit, so a takeover waits for it or has already won."""
    return (
        sa.select(runs.c.id)
        .where(runs.c.id == run_id, runs.c.lease_owner == owner)
        .with_for_update(read=True)
    )


#: ``held_row`` built once (a statement built per call costs more than SQLite running it):
#: execute with ``{"h_run": run_id, "h_owner": owner}``
HELD = held_row(sa.bindparam("h_run", type_=runs.c.id.type), sa.bindparam("h_owner"))


def statements_for(sql: Dialect) -> Statements:
    # a checkpoint lands only while its writer holds the run: a worker cut off past its lease
    # (partitioned, paused) writes nothing once another worker has taken the run over
    source = sa.select(*(sa.bindparam(f, type_=run_steps.c[f].type) for f in STEP_FIELDS)).where(
        held_row(sa.bindparam("run_id", type_=runs.c.id.type), sa.bindparam("owner")).exists()
    )
    ins = sql.insert(run_steps).from_select(STEP_FIELDS, source)
    cols = ("kind", "name", "status", "idempotency_key", "attempts", "next_attempt_at")
    save_step = ins.on_conflict_do_update(
        index_elements=["run_id", "seq"],
        set_={
            **{c: ins.excluded[c] for c in cols},
            **{c: ins.excluded[c] for c in ("result", "error", "updated_at", "first_attempt_at")},
        },
        where=run_steps.c.status != "completed",
    )
    mine = sa.and_(runs.c.id == sa.bindparam("b_id"), runs.c.lease_owner == sa.bindparam("b_owner"))
    finish_run = (
        sa.update(runs)
        .where(mine)
        .values(
            status=sa.bindparam("b_status"),
            result=sa.bindparam("b_result", type_=runs.c.result.type),
            error=sa.bindparam("b_error"),
            next_at=None,
            lease_owner=None,
            lease_until=None,
            updated_at=sa.bindparam("b_now", type_=runs.c.updated_at.type),
        )
    )
    # a NULL next_at while held means "no wake-up since the claim"; a send or cancel sets it
    suspend_run = (
        sa.update(runs)
        .where(mine)
        .values(
            next_at=sa.case(
                (runs.c.next_at.is_(None), sa.bindparam("b_until", type_=runs.c.next_at.type)),
                else_=runs.c.next_at,
            ),
            lease_owner=None,
            lease_until=None,
            updated_at=sa.bindparam("b_now", type_=runs.c.updated_at.type),
        )
    )
    set_status = (
        sa.update(runs)
        .where(mine)
        .values(
            status=sa.bindparam("b_status"),
            updated_at=sa.bindparam("b_now", type_=runs.c.updated_at.type),
        )
    )
    return Statements(save_step, finish_run, suspend_run, set_status)
