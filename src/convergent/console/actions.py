"""Operator actions: named, confirmed, performed with the same functions the CLI calls, recorded.

Each action is a function ``(store, target_id, params) -> message``, registered under a name
(``run.cancel``, ``dead_letter.retry``, ...). `perform` records who asked, when and for what
before it starts (``started``) and how it ended (``ok`` / ``failed``) after, so an action cut
short by a crash still shows. More actions plug in with `register_action`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from convergent.auth import Principal
from convergent.errors import ConvergentError, NotFound
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import operator_actions

__all__ = [
    "ACTIONS",
    "Action",
    "ActionFailed",
    "Outcome",
    "perform",
    "record",
    "register_action",
]

ActionFn = Callable[[Store, str, dict[str, str]], Awaitable[str]]


@dataclass(frozen=True)
class Action:
    name: str
    target_kind: str  # run | dead_letter | dead_letters | webhook_endpoint | schedule
    label: str  # the button
    confirm: str  # the question on the confirmation page; {target} is filled in
    fn: ActionFn
    params: tuple[str, ...] = ()  # form fields the action reads besides the target
    danger: bool = False


ACTIONS: dict[str, Action] = {}


def register_action(action: Action) -> Action:
    ACTIONS[action.name] = action
    return action


@dataclass(frozen=True)
class Outcome:
    action: str
    target_id: str
    ok: bool
    message: str
    record_id: uuid.UUID
    details: dict[str, Any] = field(default_factory=dict)


class ActionFailed(ConvergentError):
    """An operator action did not go through; the message says why."""

    code = "action-failed"


async def record(
    store: Store,
    principal: Principal,
    action: Action,
    target_id: str,
    params: dict[str, str],
) -> uuid.UUID:
    record_id = uuid7()
    async with store.begin() as conn:
        await conn.execute(
            operator_actions.insert().values(
                id=record_id,
                at=store.clock.now(),
                actor=principal.name,
                action=action.name,
                target_kind=action.target_kind,
                target_id=target_id[:255],
                params=params or None,
                outcome="started",
            )
        )
    return record_id


async def perform(
    store: Store, principal: Principal, name: str, target_id: str, params: dict[str, str]
) -> Outcome:
    """Run action ``name`` on ``target_id`` for an admin ``principal``; record it either way."""
    action = ACTIONS.get(name)
    if action is None:
        raise NotFound(f"no action {name!r}; known: {', '.join(sorted(ACTIONS))}")
    if not principal.admin:
        raise ActionFailed(f"key {principal.name!r} is not an admin key")
    params = {k: v for k, v in params.items() if k in action.params and v}
    record_id = await record(store, principal, action, target_id, params)
    try:
        message, ok = await action.fn(store, target_id, params), True
    except ConvergentError as exc:
        message, ok = exc.message, False
    async with store.begin() as conn:
        await conn.execute(
            sa.update(operator_actions)
            .where(operator_actions.c.id == record_id)
            .values(outcome="ok" if ok else "failed", detail=message[:2000])
        )
    return Outcome(name, target_id, ok, message, record_id)


# -- the actions that exist today ------------------------------------------------------------


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise ActionFailed(f"{raw!r} is not a {what} id") from None


async def _cancel_run(store: Store, target: str, _params: dict[str, str]) -> str:
    from convergent.workflows import cancel, status

    run_id = _uuid(target, "run")
    run = await status(store, run_id)
    if run.done:
        raise ActionFailed(f"run {run_id} is already {run.status}: nothing to cancel")
    async with store.begin() as conn:
        await cancel(conn, run_id)
    return "cancel requested: the run compensates what it did, then ends cancelled"


async def _retry_letter(store: Store, target: str, _params: dict[str, str]) -> str:
    from convergent import dlq

    row = await dlq.retry(store, target, actor=None)  # `perform` records it
    return f"retried {row.source} dead letter {row.id}"


async def _discard_letter(store: Store, target: str, _params: dict[str, str]) -> str:
    from convergent import dlq

    row = await dlq.discard(store, target, actor=None)
    return f"discarded dead letter {row.id}"


async def _resume_run(store: Store, target: str, params: dict[str, str]) -> str:
    from convergent.workflows import resume

    run_id = _uuid(target, "run")
    raw = params.get("from_step", "").strip()
    if raw and not raw.isdigit():
        raise ActionFailed(f"{raw!r} is not a step position (a number from the run's steps)")
    async with store.begin() as conn:
        at = await resume(conn, run_id, from_step=int(raw) if raw else None)
    return f"run resumed from position {at}"


async def _retry_step(store: Store, target: str, _params: dict[str, str]) -> str:
    from convergent.workflows import retry_step

    run_id = _uuid(target, "run")
    async with store.begin() as conn:
        seq = await retry_step(conn, run_id)
    return f"the step at position {seq} runs now"


#: a bulk action by filter applies to at most this many letters (the oldest first)
BULK_LIMIT = 1000


async def _bulk(store: Store, params: dict[str, str], one: ActionFn, verb: str) -> str:
    """Each matching letter in its own transaction, through the single-letter action (which
    calls `convergent.dlq`), so one that fails does not stop the others."""
    from convergent import dlq

    where = dlq.LetterFilter(
        source=params.get("source") or None,
        status="dead",
        name=(params.get("name") or "").strip() or None,
        key=(params.get("key") or "").strip() or None,
    )
    ids = [letter.id for letter in await dlq.list_letters(store, where, limit=BULK_LIMIT)]
    done, failed = 0, []
    for letter_id in ids:
        try:
            await one(store, str(letter_id), {})
            done += 1
        except ConvergentError as exc:
            failed.append(f"{letter_id}: {exc.message}")
    if failed and not done:
        raise ActionFailed(f"none {verb}: " + "; ".join(failed[:3]))
    tail = f"; {len(failed)} failed ({'; '.join(failed[:3])})" if failed else ""
    return f"{verb} {done} dead letter(s){tail}"


async def _retry_matching(store: Store, _target: str, params: dict[str, str]) -> str:
    return await _bulk(store, params, _retry_letter, "retried")


async def _discard_matching(store: Store, _target: str, params: dict[str, str]) -> str:
    return await _bulk(store, params, _discard_letter, "discarded")


async def _resend(store: Store, target: str, params: dict[str, str]) -> str:
    from convergent.webhooks import resend

    endpoint_id = _uuid(target, "webhook endpoint")
    message_id = _uuid(params.get("message_id", ""), "webhook message")
    async with store.begin() as conn:
        await resend(conn, message_id, endpoint_id)
    return f"message {message_id} queued for endpoint {endpoint_id} again"


def _set_enabled(enabled: bool) -> ActionFn:
    async def go(store: Store, target: str, _params: dict[str, str]) -> str:
        from convergent.webhooks import update_endpoint

        async with store.begin() as conn:
            target_id = _uuid(target, "webhook endpoint")
            endpoint = await update_endpoint(conn, target_id, enabled=enabled)
        return f"endpoint {endpoint.url} {'enabled' if enabled else 'disabled'}"

    return go


def _schedule(verb: str) -> ActionFn:
    async def go(store: Store, target: str, _params: dict[str, str]) -> str:
        from convergent.workflows import schedules

        change = {"pause": schedules.pause, "resume": schedules.resume}.get(verb, schedules.trigger)
        await change(store, target)  # `perform` records it; UnknownSchedule says what to do
        done = {"pause": "paused", "resume": "resumed", "trigger": "triggered: a run starts now"}
        return f"schedule {target} {done[verb]}"

    return go


for _action in (
    Action(
        "run.cancel",
        "run",
        "Cancel run",
        "Cancel run {target}? Its saga undoes the steps it completed, then the run ends cancelled.",
        _cancel_run,
        danger=True,
    ),
    Action(
        "run.resume",
        "run",
        "Resume run",
        "Resume run {target} from its last checkpoint (or the position given)? Deploy the fix "
        "first: the failed step runs again at once.",
        _resume_run,
        params=("from_step",),
    ),
    Action(
        "run.retry_step",
        "run",
        "Retry step now",
        "Run the step of run {target} that waits out a retry backoff now?",
        _retry_step,
    ),
    Action(
        "dead_letter.retry",
        "dead_letter",
        "Retry",
        "Hand dead letter {target} back to its source to try again?",
        _retry_letter,
    ),
    Action(
        "dead_letter.discard",
        "dead_letter",
        "Discard",
        "Discard dead letter {target}? It is kept, marked discarded, and never retried.",
        _discard_letter,
        danger=True,
    ),
    Action(
        "dead_letters.retry",
        "dead_letters",
        "Retry all matching",
        "Retry every dead letter matching {target}?",
        _retry_matching,
        params=("source", "name", "key"),
    ),
    Action(
        "dead_letters.discard",
        "dead_letters",
        "Discard all matching",
        "Discard every dead letter matching {target}?",
        _discard_matching,
        params=("source", "name", "key"),
        danger=True,
    ),
    Action(
        "webhook.resend",
        "webhook_endpoint",
        "Resend",
        "Send the message again to endpoint {target} (same webhook-id)?",
        _resend,
        params=("message_id",),
    ),
    Action(
        "webhook.enable",
        "webhook_endpoint",
        "Enable",
        "Enable endpoint {target}? Pending callbacks are sent again.",
        _set_enabled(True),
    ),
    Action(
        "webhook.disable",
        "webhook_endpoint",
        "Disable",
        "Disable endpoint {target}? Callbacks wait until it is enabled.",
        _set_enabled(False),
        danger=True,
    ),
    Action(
        "schedule.pause",
        "schedule",
        "Pause",
        "Pause schedule {target}? It starts no run until it is resumed.",
        _schedule("pause"),
        danger=True,
    ),
    Action(
        "schedule.resume",
        "schedule",
        "Resume",
        "Resume schedule {target} from its next tick (the ticks of the pause are skipped)?",
        _schedule("resume"),
    ),
    Action(
        "schedule.trigger",
        "schedule",
        "Run now",
        "Start a run of schedule {target} now, outside its ticks?",
        _schedule("trigger"),
    ),
):
    register_action(_action)
