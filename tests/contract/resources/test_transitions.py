"""Transitions on the user's table: one conditional UPDATE, typed errors, on both databases."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from convergent.errors import InvalidTransition, NotFound, StaleVersion
from convergent.resources import ResourceTable
from convergent.store import Store
from tests.contract.resources.conftest import new_ticket, state_of, tickets


async def test_a_transition_moves_the_state_and_bumps_the_version(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        row = await resource.transition(conn, ticket.ticket_id, "start")
    assert (row.status, row.rev) == ("working", 2)
    async with store.read() as conn:
        assert await state_of(conn, ticket.ticket_id) == ("working", 2)


async def test_a_missing_resource_is_not_found(store: Store, resource: ResourceTable) -> None:
    async with store.begin() as conn:
        with pytest.raises(NotFound):
            await resource.transition(conn, uuid.uuid4(), "start")


async def test_an_action_the_state_forbids_is_an_invalid_transition(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        with pytest.raises(InvalidTransition) as caught:
            await resource.transition(conn, ticket.ticket_id, "pause")
    assert caught.value.details["state"] == "open"


async def test_a_wrong_expected_version_is_stale_and_changes_nothing(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        with pytest.raises(StaleVersion) as caught:
            await resource.transition(conn, ticket.ticket_id, "start", expected_version=7)
        assert await state_of(conn, ticket.ticket_id) == ("open", 1)
    assert caught.value.details["current_version"] == 1


async def test_stale_version_wins_over_invalid_transition(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        with pytest.raises(StaleVersion):
            await resource.transition(conn, ticket.ticket_id, "pause", expected_version=3)


async def test_a_multi_source_action_records_the_true_from_state(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.transition(conn, ticket.ticket_id, "start")
        await resource.transition(conn, ticket.ticket_id, "close", expected_version=2)
    async with store.read() as conn:
        history = await resource.history(conn, ticket.ticket_id)
    assert (history[-1].from_state, history[-1].to_state) == ("working", "closed")


async def test_a_target_map_sends_each_source_to_its_own_state(
    store: Store, resource: ResourceTable
) -> None:
    fresh, busy = await new_ticket(store, resource), await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.transition(conn, busy.ticket_id, "start")
        dropped = await resource.transition(conn, fresh.ticket_id, "drop")
        abandoned = await resource.transition(conn, busy.ticket_id, "drop")
    assert (dropped.status, abandoned.status) == ("dropped", "abandoned")


@pytest.mark.parametrize("action", ["start", "close"])
async def test_many_tasks_racing_one_action_one_wins_the_rest_get_typed_errors(
    database_url: str, resource: ResourceTable, action: str
) -> None:
    stores = [Store(database_url) for _ in range(2)]
    try:
        ticket = await new_ticket(stores[0], resource)

        async def attempt(i: int) -> str:
            store = stores[i % 2]
            try:
                async with store.begin() as conn:
                    await resource.transition(conn, ticket.ticket_id, action)
            except (InvalidTransition, StaleVersion) as exc:
                return type(exc).__name__
            return "won"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(12)))
        async with stores[0].read() as conn:
            history = await resource.history(conn, ticket.ticket_id)
    finally:
        for s in stores:
            await s.close()
    assert outcomes.count("won") == 1
    assert set(outcomes) - {"won"} == {"InvalidTransition"}
    assert [e.action for e in history] == ["create", action]


async def test_racing_writers_with_the_same_version_all_but_one_are_stale(
    database_url: str, resource: ResourceTable
) -> None:
    stores = [Store(database_url) for _ in range(2)]
    try:
        ticket = await new_ticket(stores[0], resource)

        async def attempt(i: int) -> str:
            store = stores[i % 2]
            try:
                async with store.begin() as conn:
                    await resource.update_fields(
                        conn, ticket.ticket_id, {"title": f"w{i}"}, expected_version=1
                    )
            except StaleVersion:
                return "stale"
            return "won"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(10)))
    finally:
        for s in stores:
            await s.close()
    assert sorted(outcomes) == ["stale"] * 9 + ["won"]


async def test_a_rolled_back_transition_leaves_neither_change_nor_history(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    with pytest.raises(RuntimeError):
        async with store.begin() as conn:
            await resource.transition(conn, ticket.ticket_id, "start")
            raise RuntimeError("the handler failed after the transition")
    async with store.read() as conn:
        assert await state_of(conn, ticket.ticket_id) == ("open", 1)
        assert [e.action for e in await resource.history(conn, ticket.ticket_id)] == ["create"]


async def test_update_fields_bumps_the_version_and_sets_updated_at(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        row = await resource.update_fields(
            conn, ticket.ticket_id, {"title": "new"}, expected_version=1
        )
    assert (row.title, row.rev, row.status) == ("new", 2, "open")
    assert row.updated_at is not None


async def test_update_fields_refuses_states_outside_the_allowed_ones(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        await resource.transition(conn, ticket.ticket_id, "close")
        with pytest.raises(InvalidTransition):
            await resource.update_fields(
                conn, ticket.ticket_id, {"title": "x"}, states=["open", "working"]
            )


async def test_create_if_absent_returns_none_for_an_existing_key(
    store: Store, resource: ResourceTable
) -> None:
    ticket = await new_ticket(store, resource)
    async with store.begin() as conn:
        again = await resource.create(
            conn, {"ticket_id": ticket.ticket_id}, conflict_columns=["ticket_id"]
        )
        count = (await conn.execute(sa.select(sa.func.count()).select_from(tickets))).scalar()
    assert again is None
    assert count == 1
