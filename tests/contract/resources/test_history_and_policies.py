"""History, conflict policies, confirm-once, wake-ups and waiting, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from convergent.clock import ManualClock
from convergent.errors import ConfigurationError, InvalidTransition, StaleVersion
from convergent.resources import CHANNEL, ConflictPolicy, ResourceTable, wait_for
from convergent.resources.confirm import confirm_once
from convergent.resources.conflicts import update_with_policy
from convergent.store import Store
from tests.contract.resources.conftest import new_ticket


async def test_history_lists_every_change_in_order_with_consecutive_versions(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.transition(conn, ticket.ticket_id, "start", actor="ann", cause="triage")
        await resource.update_fields(conn, ticket.ticket_id, {"title": "x"}, metadata={"f": 1})
        await resource.transition(conn, ticket.ticket_id, "pause")
        await resource.transition(conn, ticket.ticket_id, "close")
    async with store.read() as conn:
        history = await resource.history(conn, ticket.ticket_id)
    assert [(e.action, e.from_state, e.to_state, e.version) for e in history] == [
        ("create", None, "open", 1),
        ("start", "open", "working", 2),
        ("update", "working", "working", 3),
        ("pause", "working", "open", 4),
        ("close", "open", "closed", 5),
    ]
    assert (history[1].actor, history[1].cause) == ("ann", "triage")
    assert history[2].metadata == {"f": 1}


async def test_history_times_come_from_the_store_clock(database_url: str) -> None:
    clock = ManualClock()
    store = Store(database_url, clock=clock)
    try:
        from tests.contract.resources.conftest import TICKETS, user_metadata

        async with store.begin() as conn:
            await conn.run_sync(user_metadata.create_all)
        resource = TICKETS
        ticket = await new_ticket(store, resource)
        clock.advance(60)
        async with store.begin() as conn:
            await resource.transition(conn, ticket.ticket_id, "start")
            history = await resource.history(conn, ticket.ticket_id)
    finally:
        await store.close()
    assert (history[1].at - history[0].at).total_seconds() == 60


async def test_reject_policy_raises_stale_version(store: Store, resource: ResourceTable) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.update_fields(conn, ticket.ticket_id, {"title": "first"})
        with pytest.raises(StaleVersion):
            await update_with_policy(
                resource, conn, ticket.ticket_id, {"title": "second"}, expected_version=1
            )


async def test_last_write_wins_overwrites_a_newer_version(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.update_fields(conn, ticket.ticket_id, {"title": "first"})
        row = await update_with_policy(
            resource,
            conn,
            ticket.ticket_id,
            {"title": "second"},
            expected_version=1,
            policy=ConflictPolicy.LAST_WRITE_WINS,
        )
    assert (row.title, row.rev) == ("second", 3)


async def test_merge_policy_rereads_merges_and_retries(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource, tags="a")
    seen: list[dict[str, Any]] = []

    def union_tags(current: Any, proposed: Any) -> dict[str, Any]:
        seen.append(dict(current))
        tags = set(current["tags"].split(",")) | set(proposed["tags"].split(","))
        return {"tags": ",".join(sorted(tags))}

    async with store.begin() as conn:
        await resource.update_fields(conn, ticket.ticket_id, {"tags": "a,b"})  # someone else
        row = await update_with_policy(
            resource,
            conn,
            ticket.ticket_id,
            {"tags": "a,c"},
            expected_version=1,
            policy="merge",
            merge=union_tags,
        )
    assert (row.tags, row.rev) == ("a,b,c", 3)
    assert [s["rev"] for s in seen] == [2]


async def test_merge_policy_without_a_function_is_a_configuration_error(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        with pytest.raises(ConfigurationError):
            await update_with_policy(
                resource, conn, ticket.ticket_id, {}, expected_version=1, policy="merge"
            )


async def test_confirm_once_runs_the_action_once_and_repeats_answer_the_same(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    results = []
    for _ in range(3):
        async with store.begin() as conn:
            results.append(await confirm_once(resource, conn, ticket.ticket_id, action="start"))
    async with store.read() as conn:
        history = await resource.history(conn, ticket.ticket_id)
    assert [applied for _, applied in results] == [True, False, False]
    assert {(row.status, row.rev) for row, _ in results} == {("working", 2)}
    assert [e.action for e in history] == ["create", "start"]


async def test_confirm_once_of_an_action_that_never_ran_is_still_invalid(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.transition(conn, ticket.ticket_id, "close")
        with pytest.raises(InvalidTransition):
            await confirm_once(resource, conn, ticket.ticket_id, action="start")


async def test_a_transition_wakes_subscribers_after_commit(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.notifier.subscribe(CHANNEL) as sub:
        sub.drain()
        async with store.begin() as conn:
            await resource.transition(conn, ticket.ticket_id, "start")
        assert await sub.wait(5)
        assert f"ticket:{ticket.ticket_id}" in sub.drain()


async def test_wait_for_returns_early_when_the_resource_changes(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)

    async def load(conn: Any) -> Any:
        return await resource.get(conn, ticket.ticket_id)

    waiter = asyncio.create_task(
        wait_for(
            store,
            "ticket",
            ticket.ticket_id,
            load,
            lambda r: r.status == "closed",
            timeout=20,
            poll_interval=20,  # only the wake-up can end this wait early
        )
    )
    async with store.begin() as conn:
        await resource.transition(conn, ticket.ticket_id, "close")
    loop = asyncio.get_running_loop()
    started = loop.time()
    row = await asyncio.wait_for(waiter, 10)
    assert row.status == "closed"
    assert loop.time() - started < 5


async def test_wait_for_times_out_with_the_last_state(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)

    async def load(conn: Any) -> Any:
        return await resource.get(conn, ticket.ticket_id)

    row = await wait_for(
        store, "ticket", ticket.ticket_id, load, lambda r: r.status == "closed", timeout=0.3
    )
    assert row.status == "open"
