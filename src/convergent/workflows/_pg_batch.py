"""PostgreSQL: a whole batch of checkpoints in ONE statement (one round trip, atomic).

Data-modifying CTEs apply every kind of write at once from JSON arrays; the statement commits
on its own (autocommit), so a batch costs one round trip instead of BEGIN, one per kind,
NOTIFY and COMMIT. Rows of different runs never meet, so the CTEs cannot conflict.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

__all__ = ["BATCH_SQL", "START_SQL", "batch_params", "start_params"]


def _rows(name: str) -> str:
    return f"jsonb_to_recordset(CAST(CAST(:{name} AS text) AS jsonb))"


BATCH_SQL = sa.text(f"""
WITH s AS (
  INSERT INTO convergent_run_steps AS t
    (run_id, seq, kind, name, status, idempotency_key, attempts, next_attempt_at, result,
     error, updated_at)
  SELECT run_id, seq, kind, name, status, idempotency_key, attempts, next_attempt_at, result,
     error, updated_at
  FROM {_rows("steps")} AS x(run_id uuid, seq int, kind text, name text, status text,
     idempotency_key text, attempts int, next_attempt_at timestamptz, result jsonb, error text,
     updated_at timestamptz)
  ON CONFLICT (run_id, seq) DO UPDATE SET kind = excluded.kind, name = excluded.name,
     status = excluded.status, idempotency_key = excluded.idempotency_key,
     attempts = excluded.attempts, next_attempt_at = excluded.next_attempt_at,
     result = excluded.result, error = excluded.error, updated_at = excluded.updated_at
  WHERE t.status <> 'completed'
  RETURNING 1
), f AS (
  UPDATE convergent_runs AS r SET status = x.status, result = x.result, error = x.error,
     next_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = x.now
  FROM {_rows("finish")} AS x(id uuid, owner text, status text, result jsonb, error text,
     now timestamptz)
  WHERE r.id = x.id AND r.lease_owner = x.owner
  RETURNING 1
), p AS (
  UPDATE convergent_runs AS r
  SET next_at = CASE WHEN r.next_at IS NULL THEN x.until ELSE r.next_at END,
     lease_owner = NULL, lease_until = NULL, updated_at = x.now
  FROM {_rows("suspend")} AS x(id uuid, owner text, until timestamptz, now timestamptz)
  WHERE r.id = x.id AND r.lease_owner = x.owner
  RETURNING 1
), c AS (
  UPDATE convergent_runs AS r SET status = x.status, updated_at = x.now
  FROM {_rows("status")} AS x(id uuid, owner text, status text, now timestamptz)
  WHERE r.id = x.id AND r.lease_owner = x.owner
  RETURNING 1
)
SELECT pg_notify(:channel, '') WHERE CAST(:notify AS boolean)
""")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def batch_params(
    by_kind: dict[str, list[dict[str, Any]]], notify: bool, channel: str
) -> dict[str, Any]:
    """Bind values for `BATCH_SQL` from the writes of one batch, grouped by kind."""
    out: dict[str, Any] = {"notify": notify, "channel": channel}
    for kind in ("steps", "finish", "suspend", "status"):
        rows = by_kind.get(kind, [])
        out[kind] = json.dumps([_strip(kind, r) for r in rows], default=_default)
    return out


def _strip(kind: str, row: dict[str, Any]) -> dict[str, Any]:
    if kind == "steps":
        return row
    return {k.removeprefix("b_"): v for k, v in row.items()} | {"owner": row["b_owner"]}


#: insert a batch of runs; answer each (workflow, key) with its run id, new or existing
START_SQL = sa.text(f"""
WITH x AS (
  SELECT * FROM {_rows("runs")} AS x(id uuid, workflow text, key text, queue text,
     status text, args jsonb, next_at timestamptz, lease_owner text, lease_until timestamptz,
     created_at timestamptz)
), ins AS (
  INSERT INTO convergent_runs (id, workflow, key, queue, status, args, attempts, next_at,
     lease_owner, lease_until, cancel_requested, created_at, updated_at)
  SELECT id, workflow, key, queue, status, args, 0, next_at, lease_owner, lease_until, false,
     created_at, created_at
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
    keep = (
        "id",
        "workflow",
        "key",
        "queue",
        "status",
        "args",
        "next_at",
        "lease_owner",
        "lease_until",
        "created_at",
    )
    return {"runs": json.dumps([{k: r.get(k) for k in keep} for r in rows], default=_default)}
