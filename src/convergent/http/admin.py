"""The admin HTTP router: operate workflow runs and the dead-letter queue over HTTP.

``app.include_router(admin_router(), prefix="/admin")`` with ``app.state.store`` set and
`install_problem_handlers`; every route needs an admin API key (``convergent keys create NAME
--admin``) and records the key's name as who acted.

- ``GET  /runs/{id}``                   the run, its checkpoints and its history
- ``POST /runs/{id}/cancel``            cancel (its saga compensates first)
- ``POST /runs/{id}/resume``            resume a failed run; body ``{"from_step": 3}`` optional
- ``POST /runs/{id}/retry-step``        the step waiting out a backoff runs now
- ``GET  /dead-letters``                ``?source=&status=&name=&key=&limit=``
- ``GET  /dead-letters/{id}``           one letter: reason, attempts, payload
- ``POST /dead-letters/{id}/retry``     and ``/discard``
- ``POST /dead-letters/retry``          every dead letter matching the body's filter; and
  ``/dead-letters/discard``
- ``GET  /schedules``                   the schedules, their next and last ticks
- ``POST /schedules/{name}/pause``      and ``/resume``, ``/trigger`` (one run now)
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel
from starlette.requests import Request

from convergent import dlq
from convergent.auth import Principal
from convergent.auth.dependencies import require_admin
from convergent.errors import ConfigurationError, RunNotResumable
from convergent.http.problem import Problem
from convergent.store import Store
from convergent.workflows import (
    cancel,
    history,
    resume,
    retry_step,
    run_steps_of,
    status,
)

__all__ = ["admin_router"]

Admin = Annotated[Principal, Depends(require_admin)]


class ResumeBody(BaseModel):
    from_step: int | None = None


class LetterQuery(BaseModel):
    source: str | None = None
    name: str | None = None
    key: str | None = None


def _store(request: Request) -> Store:
    store = getattr(request.app.state, "store", None)
    if not isinstance(store, Store):
        raise ConfigurationError("the admin router needs the app's Store: set app.state.store")
    return store


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _bulk(bulk: dlq.Bulk) -> dict[str, Any]:
    return {
        "done": [str(i) for i in bulk.done],
        "failed": {str(k): v for k, v in bulk.failed.items()},
    }


def admin_router() -> APIRouter:
    router = APIRouter(tags=["admin"])

    @router.get("/runs/{run_id}")
    async def show_run(run_id: uuid.UUID, request: Request, who: Admin) -> dict[str, Any]:
        store = _store(request)
        run = await status(store, run_id)
        return {
            "run": _json(asdict(run)),
            "steps": _json([asdict(s) for s in await run_steps_of(store, run_id)]),
            "history": _json([asdict(a) for a in await history(store, run_id)]),
        }

    @router.post("/runs/{run_id}/cancel", status_code=202)
    async def cancel_run(run_id: uuid.UUID, request: Request, who: Admin) -> dict[str, Any]:
        store = _store(request)
        if (await status(store, run_id)).done:
            raise RunNotResumable(f"run {run_id} is already finished: nothing to cancel")
        async with store.begin() as conn:
            await cancel(conn, run_id, actor=who.name)
        return {"run_id": str(run_id), "cancel_requested": True}

    @router.post("/runs/{run_id}/resume", status_code=202)
    async def resume_run(
        run_id: uuid.UUID,
        request: Request,
        who: Admin,
        body: Annotated[ResumeBody | None, Body()] = None,
    ) -> dict[str, Any]:
        from_step = body.from_step if body is not None else None
        async with _store(request).begin() as conn:
            at = await resume(conn, run_id, from_step=from_step, actor=who.name)
        return {"run_id": str(run_id), "resumed_from": at}

    @router.post("/runs/{run_id}/retry-step", status_code=202)
    async def retry_run_step(run_id: uuid.UUID, request: Request, who: Admin) -> dict[str, Any]:
        async with _store(request).begin() as conn:
            seq = await retry_step(conn, run_id, actor=who.name)
        return {"run_id": str(run_id), "step": seq}

    @router.get("/dead-letters")
    async def list_letters(
        request: Request,
        who: Admin,
        source: str | None = None,
        status_: Annotated[str, Query(alias="status")] = "dead",
        name: str | None = None,
        key: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        where = dlq.LetterFilter(source, status_, name, key)
        return [
            letter.to_json()
            for letter in await dlq.list_letters(_store(request), where, limit=limit)
        ]

    @router.get("/dead-letters/{letter_id}")
    async def show_letter(letter_id: uuid.UUID, request: Request, who: Admin) -> dict[str, Any]:
        return (await dlq.show(_store(request), letter_id)).to_json()

    @router.post("/dead-letters/retry")
    async def retry_matching(request: Request, who: Admin, body: LetterQuery) -> dict[str, Any]:
        where = _filter(body)
        return _bulk(await dlq.retry_matching(_store(request), where, actor=who.name))

    @router.post("/dead-letters/discard")
    async def discard_matching(request: Request, who: Admin, body: LetterQuery) -> dict[str, Any]:
        where = _filter(body)
        return _bulk(await dlq.discard_matching(_store(request), where, actor=who.name))

    @router.post("/dead-letters/{letter_id}/retry")
    async def retry_letter(letter_id: uuid.UUID, request: Request, who: Admin) -> dict[str, Any]:
        letter = await dlq.retry(_store(request), letter_id, actor=who.name)
        return {"id": str(letter.id), "status": "retried"}

    @router.post("/dead-letters/{letter_id}/discard")
    async def discard_letter(letter_id: uuid.UUID, request: Request, who: Admin) -> dict[str, Any]:
        letter = await dlq.discard(_store(request), letter_id, actor=who.name)
        return {"id": str(letter.id), "status": "discarded"}

    from convergent.workflows import schedules

    @router.get("/schedules")
    async def list_all_schedules(request: Request, who: Admin) -> list[dict[str, Any]]:
        return [_json(asdict(s)) for s in await schedules.list_schedules(_store(request))]

    @router.post("/schedules/{name}/{verb}", status_code=202)
    async def change_schedule(name: str, verb: str, request: Request, who: Admin) -> dict[str, Any]:
        act = {"pause": schedules.pause, "resume": schedules.resume, "trigger": schedules.trigger}
        if verb not in act:
            raise Problem(404, "unknown-action", "a schedule can be paused, resumed or triggered")
        await act[verb](_store(request), name, actor=who.name)
        return {"schedule": name, "done": verb}

    return router


def _filter(body: LetterQuery) -> dlq.LetterFilter:
    if not (body.source or body.name or body.key):
        raise Problem(422, "filter-required", "a bulk action needs a filter: source, name or key")
    return dlq.LetterFilter(body.source, "dead", body.name, body.key)
