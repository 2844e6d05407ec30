"""PostgreSQL: batches of writes as ONE statement each (one round trip, atomic).

Data-modifying CTEs apply every kind of write at once from bound arrays (one per column); each
statement commits on its own (autocommit), so a batch costs one round trip instead of BEGIN, one
per kind, NOTIFY and COMMIT.

- `batch_statement`: a worker's checkpoints; rows of different runs never meet, so the CTEs cannot
  conflict. Every write is fenced: it lands only while the worker holds the run's lease.
- `START_SQL`: a batch of new runs, answering each (workflow, key) with its run id.
- `DELETE_UNDER_LEASES`: the relay's settle when nothing failed.
- `transition_statement`: a resource transition, its history row and its wake-up.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from convergent.store.schema import resource_history
from convergent.store.types import JSONType, UTCDateTime

__all__ = [
    "DELETE_UNDER_LEASES",
    "START_SQL",
    "batch_params",
    "batch_statement",
    "start_params",
    "transition_statement",
]


def _arrays(prefix: str, columns: str) -> str:
    """``unnest`` of one bound array per column: asyncpg sends them in binary, no JSON to build
    or parse. ``columns`` is "name type, ..."."""
    pairs = [c.split() for c in columns.split(",")]
    arrays = ", ".join(f"CAST(:{prefix}{n} AS {t}[])" for n, t in pairs)
    return f"unnest({arrays}) AS x({', '.join(n for n, _ in pairs)})"


_STEP_COLUMNS = (
    "run_id uuid, seq int, kind text, name text, status text, idempotency_key text, "
    "attempts int, next_attempt_at timestamptz, result jsonb, error text, "
    "updated_at timestamptz, first_attempt_at timestamptz, owner text"
)
_RUN_COLUMNS = {
    "finish": "id uuid, owner text, status text, result jsonb, error text, now timestamptz",
    "suspend": "id uuid, owner text, until timestamptz, now timestamptz",
    "status": "id uuid, owner text, status text, now timestamptz",
}
_COLUMN_NAMES = {
    kind: tuple(c.split()[0] for c in cols.split(","))
    for kind, cols in {"steps": _STEP_COLUMNS, **_RUN_COLUMNS}.items()
}
_PREFIX = {"steps": "s_", "finish": "f_", "suspend": "p_", "status": "c_"}

# Fencing: a checkpoint lands only while its worker holds the run. Runs that also change state
# in this batch are held if their UPDATE (which locks and re-checks the owner) matched; the
# others are share-locked in `h`, which waits for a concurrent takeover and re-checks after it.
# `h` leaves out the runs the UPDATEs touch (``busy``): a lock on a row this statement also
# updates would skip that row. `h` looks each run up by its key (LATERAL), whatever the planner
# thinks of the table's size: a hash join would scan every run for each batch.
_UPDATES = {
    "finish": f"""f AS (
  UPDATE convergent_runs AS r SET status = x.status, result = x.result, error = x.error,
     next_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = x.now
  FROM {_arrays("f_", _RUN_COLUMNS["finish"])}
  WHERE r.id = x.id AND r.lease_owner = x.owner
  RETURNING r.id
)""",
    "suspend": f"""p AS (
  UPDATE convergent_runs AS r
  SET next_at = CASE WHEN r.next_at IS NULL THEN x.until ELSE r.next_at END,
     lease_owner = NULL, lease_until = NULL, updated_at = x.now
  FROM {_arrays("p_", _RUN_COLUMNS["suspend"])}
  WHERE r.id = x.id AND r.lease_owner = x.owner
  RETURNING r.id
)""",
    "status": f"""c AS (
  UPDATE convergent_runs AS r SET status = x.status, updated_at = x.now
  FROM {_arrays("c_", _RUN_COLUMNS["status"])}
  WHERE r.id = x.id AND r.lease_owner = x.owner
  RETURNING r.id
)""",
}
_CTE_NAME = {"finish": "f", "suspend": "p", "status": "c"}

_HELD = """h AS (
  SELECT l.id
  FROM (SELECT DISTINCT x.run_id, x.owner
        FROM unnest(CAST(:s_run_id AS uuid[]), CAST(:s_owner AS text[])) AS x(run_id, owner)
        WHERE x.run_id <> ALL(CAST(:busy AS uuid[]))) AS y,
  LATERAL (SELECT r.id FROM convergent_runs AS r
           WHERE r.id = y.run_id AND r.lease_owner = y.owner FOR SHARE) AS l
)"""

_SAVE = f"""s AS (
  INSERT INTO convergent_run_steps AS t
    (run_id, seq, kind, name, status, idempotency_key, attempts, next_attempt_at, result,
     error, updated_at, first_attempt_at)
  SELECT x.run_id, x.seq, x.kind, x.name, x.status, x.idempotency_key, x.attempts,
     x.next_attempt_at, x.result, x.error, x.updated_at, x.first_attempt_at
  FROM {_arrays("s_", _STEP_COLUMNS)}
  WHERE x.run_id IN ({{held}})
  ON CONFLICT (run_id, seq) DO UPDATE SET kind = excluded.kind, name = excluded.name,
     status = excluded.status, idempotency_key = excluded.idempotency_key,
     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
     result = excluded.result, error = excluded.error, updated_at = excluded.updated_at,
     first_attempt_at = excluded.first_attempt_at
  WHERE t.status <> 'completed'
  RETURNING 1
)"""


@functools.cache
def batch_statement(kinds: frozenset[str], notify: bool) -> sa.TextClause:
    """The statement for a batch holding these kinds of writes: one text (and one prepared
    statement per connection) for each combination, so no part runs on empty input."""
    ctes = [_UPDATES[k] for k in ("finish", "suspend", "status") if k in kinds]
    if "steps" in kinds:
        updated = [_CTE_NAME[k] for k in ("finish", "suspend", "status") if k in kinds]
        held = " UNION ALL ".join(f"SELECT id FROM {n}" for n in ["h", *updated])
        ctes += [_HELD, _SAVE.replace("{held}", held)]
    tail = "SELECT pg_notify(:channel, '')" if notify else "SELECT 1"
    return sa.text(f"WITH {', '.join(ctes)}\n{tail}")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


_encode = json.JSONEncoder(default=_default).encode  # one encoder, not one per value


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is int:
        return str(value)
    return _encode(value)


def batch_params(
    by_kind: dict[str, list[dict[str, Any]]], notify_channel: str | None
) -> tuple[sa.TextClause, dict[str, Any]]:
    """`batch_statement` for the writes of one batch (grouped by kind) and its bound arrays."""
    out: dict[str, Any] = {}
    if notify_channel is not None:
        out["channel"] = notify_channel
    busy: list[Any] = []
    for kind, rows in by_kind.items():
        if not rows:
            continue
        prefix = _PREFIX[kind]
        for name in _COLUMN_NAMES[kind]:
            key = name if kind == "steps" else "b_" + name
            values = [row[key] for row in rows]
            if name == "result":
                values = [_json(v) for v in values]
            out[prefix + name] = values
        if kind != "steps":
            busy += out[prefix + "id"]
    if "s_run_id" in out:
        out["busy"] = busy
    stmt = batch_statement(
        frozenset(k for k, rows in by_kind.items() if rows), notify_channel is not None
    )
    return stmt, out


_START_COLUMNS = (
    "id uuid, workflow text, key text, queue text, version text, status text, args jsonb, "
    "next_at timestamptz, lease_owner text, lease_until timestamptz, created_at timestamptz"
)
_START_NAMES = tuple(c.split()[0] for c in _START_COLUMNS.split(","))

#: insert a batch of runs; answer each (workflow, key) with its run id, new or existing
START_SQL = sa.text(f"""
WITH x AS (
  SELECT * FROM {_arrays("r_", _START_COLUMNS)}
), ins AS (
  INSERT INTO convergent_runs (id, workflow, key, queue, version, status, args, attempts,
     next_at, lease_owner, lease_until, cancel_requested, created_at, updated_at)
  SELECT id, workflow, key, queue, version, status, args, 0, next_at, lease_owner, lease_until,
     false, created_at, created_at
  FROM x
  ON CONFLICT (workflow, key) DO NOTHING
  RETURNING id, workflow, key
)
SELECT id, workflow, key FROM ins
UNION ALL
SELECT r.id, r.workflow, r.key FROM convergent_runs AS r JOIN x
  ON r.workflow = x.workflow AND r.key = x.key
WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.workflow = x.workflow AND ins.key = x.key)
""")


def start_params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bound arrays for `START_SQL`, one per column."""
    out = {f"r_{name}": [r.get(name) for r in rows] for name in _START_NAMES}
    out["r_args"] = [_json(a) for a in out["r_args"]]
    return out


# lock the leases still ours and delete the acked rows of their partitions, in one statement
DELETE_UNDER_LEASES = sa.text(
    """
    WITH mine AS (
        SELECT h.part
        FROM convergent_leases AS l
        JOIN unnest(CAST(:names AS text[]), CAST(:tokens AS text[]), CAST(:parts AS int[]))
            AS h(name, token, part) ON l.name = h.name AND l.token = h.token
        WHERE l.holder = :holder
        FOR UPDATE OF l
    ), gone AS (
        DELETE FROM convergent_outbox
        WHERE id = ANY(CAST(:ids AS uuid[])) AND partition IN (SELECT part FROM mine)
    )
    SELECT part FROM mine
    """
)


def transition_statement(
    update: sa.Update,
    table: sa.Table,
    *,
    id_column: str,
    state_column: str,
    version_column: str,
    channel: str | None,
) -> sa.Select[Any]:
    """``update`` plus its history row (and a NOTIFY on ``channel``); selects the new row.

    The history values are bound parameters (`history_params`), so one statement object serves
    every call and SQLAlchemy compiles it once.
    """
    moved = update.returning(*table.c).cte("moved")
    moved_id = sa.cast(moved.c[id_column], sa.String)
    h = resource_history.c
    recorded = (
        resource_history.insert()
        .from_select(
            [
                h.id,
                h.resource_type,
                h.resource_id,
                h.action,
                h.from_state,
                h.to_state,
                h.version,
                h.at,
                h.actor,
                h.cause,
                h.meta,
            ],
            sa.select(
                sa.bindparam("h_id", type_=sa.Uuid()),
                sa.bindparam("h_type", type_=sa.String()),
                moved_id,
                sa.bindparam("h_action", type_=sa.String()),
                sa.bindparam("h_from", type_=sa.String()),
                moved.c[state_column],
                moved.c[version_column],
                sa.bindparam("h_at", type_=UTCDateTime()),
                sa.bindparam("h_actor", type_=sa.String()),
                sa.bindparam("h_cause", type_=sa.String()),
                sa.bindparam("h_meta", type_=JSONType),
            ).select_from(moved),
        )
        .cte("recorded")
    )
    stmt = sa.select(*(moved.c[c.name] for c in table.c)).add_cte(recorded)
    if channel is None:
        return stmt.select_from(moved)
    payload = sa.bindparam("h_type_prefix", type_=sa.String()) + moved_id
    notified = sa.select(sa.func.pg_notify(channel, payload).label("sent")).select_from(moved)
    note = notified.cte("notified")
    return stmt.select_from(moved.join(note, sa.true()))
