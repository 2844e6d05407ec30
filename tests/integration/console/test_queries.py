"""The console's read functions on SQLite and PostgreSQL: filters, keyset pages, timelines."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from convergent.console.queries import dead_letters as letters_q
from convergent.console.queries import idempotency as keys_q
from convergent.console.queries import messages as messages_q
from convergent.console.queries import overview as overview_q
from convergent.console.queries import runs as runs_q
from convergent.errors import ConfigurationError, RunNotFound
from convergent.ids import uuid7
from convergent.store import Store
from convergent.store.schema import dead_letters, idempotency_keys, run_steps, runs


async def _runs(store: Store, n: int, **values: object) -> list[uuid.UUID]:
    now = store.clock.now()
    rows = [
        {
            "id": uuid7(),
            "workflow": values.get("workflow", "orders"),
            "key": f"{values.get('prefix', 'k')}-{i}",
            "queue": values.get("queue", "default"),
            "status": values.get("status", "completed"),
            "args": {"args": [i]},
            "attempts": 1,
            "created_at": now,
            "updated_at": now + timedelta(seconds=i),
        }
        for i in range(n)
    ]
    async with store.begin() as conn:
        await conn.execute(runs.insert(), rows)
    return [r["id"] for r in rows]  # type: ignore[misc]


async def _find(store: Store, f: runs_q.RunFilter, cursor: str | None = None, limit: int = 50):  # type: ignore[no-untyped-def]
    async with store.read() as conn:
        return await runs_q.find_runs(conn, f, now=store.clock.now(), cursor=cursor, limit=limit)


async def test_runs_page_through_newest_first_without_gaps_or_repeats(store: Store) -> None:
    ids = await _runs(store, 7)
    seen, cursor = [], None
    while True:
        page = await _find(store, runs_q.RunFilter(), cursor, limit=3)
        seen += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))


async def test_runs_filter_by_state_workflow_queue_key_and_age(store: Store) -> None:
    await _runs(store, 3, status="completed")
    failed = await _runs(store, 2, status="failed", workflow="payments", queue="slow", prefix="p")
    assert {r.id for r in (await _find(store, runs_q.RunFilter(status="failed"))).items} == set(
        failed
    )
    assert len((await _find(store, runs_q.RunFilter(workflow="payments"))).items) == 2
    assert len((await _find(store, runs_q.RunFilter(queue="slow"))).items) == 2
    by_key = await _find(store, runs_q.RunFilter(key="p-1"))
    assert [r.id for r in by_key.items] == [failed[1]]
    assert len((await _find(store, runs_q.RunFilter(max_age=timedelta(minutes=5)))).items) == 5
    old = store.clock.now() + timedelta(days=1)  # "now" tomorrow: nothing from the last hour
    async with store.read() as conn:
        page = await runs_q.find_runs(conn, runs_q.RunFilter(max_age=timedelta(hours=1)), now=old)
    assert page.items == []


async def test_search_finds_a_run_by_id_by_step_key_or_by_its_key(store: Store) -> None:
    (run_id,) = await _runs(store, 1, prefix="order-42")
    await _runs(store, 3, prefix="other")
    for q in (str(run_id), f"{run_id}:2:charge", "order-42-0"):
        found = await _find(store, runs_q.RunFilter(q=q))
        assert [r.id for r in found.items] == [run_id], q
    assert (await _find(store, runs_q.RunFilter(q="nothing-like-it"))).items == []


async def test_a_tampered_page_link_is_a_clear_error(store: Store) -> None:
    with pytest.raises(ConfigurationError, match="first page"):
        await _find(store, runs_q.RunFilter(), cursor="not-a-cursor")


async def test_timeline_marks_compensations_after_the_step_a_cancel_interrupted(
    store: Store,
) -> None:
    (run_id,) = await _runs(store, 1, status="cancelled")
    now = store.clock.now()

    def step(seq: int, name: str, status: str, **extra: object) -> dict[str, object]:
        return {
            "run_id": run_id,
            "seq": seq,
            "kind": "step",
            "name": name,
            "status": status,
            "idempotency_key": f"{run_id}:{seq}:{name}",
            "attempts": extra.pop("attempts", 1),
            "updated_at": now,
            **extra,
        }

    async with store.begin() as conn:
        for row in [
            step(1, "reserve", "completed", result={"r": 1}),
            step(
                2,
                "charge",
                "retrying",
                attempts=4,
                error="TransientError: 503",
                next_attempt_at=now + timedelta(seconds=8),
                result={"first_attempt_at": now.isoformat()},
            ),
            step(3, "release", "completed", result={"released": True}),
        ]:  # one by one: each row has its own columns
            await conn.execute(run_steps.insert().values(**row))
        detail = await runs_q.run_detail(conn, run_id)
    phases = [(t.name, t.phase) for t in detail.timeline]
    assert phases == [
        ("reserve", "forward"),
        ("charge", "forward"),
        ("release", "compensation"),
    ]
    charge = detail.timeline[1]
    assert (charge.attempts, charge.error, charge.started_at) == (4, "TransientError: 503", now)
    assert charge.next_attempt_at is not None
    assert charge.idempotency_key == f"{run_id}:2:charge"
    async with store.read() as conn:
        with pytest.raises(RunNotFound):
            await runs_q.run_detail(conn, uuid7())


async def test_overview_counts_active_runs_final_runs_of_the_window_and_dead_letters(
    store: Store,
) -> None:
    await _runs(store, 4, status="completed")
    await _runs(store, 2, status="running", prefix="r")
    await _letter(store, "outbox")
    await _letter(store, "webhook")
    async with store.read() as conn:
        o = await overview_q.overview(conn, now=store.clock.now() + timedelta(seconds=1))
    assert o.runs_active == {"pending": 0, "running": 2, "compensating": 0}
    assert o.runs_final["completed"] == 4
    assert o.dead_letters == {"outbox": 1, "webhook": 1}
    assert sum(b.started for b in o.buckets) == 6
    assert sum(b.completed for b in o.buckets) == 4
    assert max(b.p95_seconds or 0 for b in o.buckets) == 3.0  # updated 0..3 s after start


async def _letter(store: Store, source: str, key: str = "k") -> uuid.UUID:
    letter_id = uuid7()
    async with store.begin() as conn:
        await conn.execute(
            dead_letters.insert().values(
                id=letter_id,
                source=source,
                source_ref="ref",
                name="topic",
                key=key,
                payload={},
                reason="gave up",
                attempts=3,
                status="dead",
                created_at=store.clock.now(),
            )
        )
    return letter_id


async def test_dead_letters_list_every_source_and_bulk_ids_follow_the_filter(
    store: Store,
) -> None:
    ids = [await _letter(store, s) for s in letters_q.SOURCES]
    async with store.read() as conn:
        page = await letters_q.find_letters(conn, letters_q.LetterFilter(), limit=3)
        assert page.extra["total"] == 4
        assert [r.id for r in page.items] == list(reversed(ids))[:3]
        rest = await letters_q.find_letters(conn, letters_q.LetterFilter(), cursor=page.next_cursor)
        assert [r.id for r in rest.items] == [ids[0]]
        only = await letters_q.letter_ids(conn, letters_q.LetterFilter(source="webhook"))
    assert only == [ids[3]]


async def test_idempotency_keys_never_show_the_scope_or_the_response(store: Store) -> None:
    now = store.clock.now()
    secretish = "cvk_raw_client_api_key"
    async with store.begin() as conn:
        await conn.execute(
            idempotency_keys.insert(),
            [
                {
                    "scope": secretish,
                    "key": f"req-{i}",
                    "fingerprint": "f",
                    "status": "in_progress" if i == 0 else "completed",
                    "response_status": None if i == 0 else 201,
                    "response_body": b"card 4242",
                    "created_at": now,
                    "expires_at": now + timedelta(hours=24, seconds=i),
                }
                for i in range(3)
            ],
        )
    async with store.read() as conn:
        flying = await keys_q.keys_in_flight(conn)
        first = await keys_q.recent_keys(conn, limit=2)
        rest = await keys_q.recent_keys(conn, cursor=first.next_cursor, limit=2)
    assert [k.key for k in flying] == ["req-0"]
    assert [k.key for k in first.items + rest.items] == ["req-2", "req-1", "req-0"]
    shown = repr(flying + first.items + rest.items) + str(first.next_cursor)
    assert secretish not in shown
    assert "4242" not in shown
    assert flying[0].client == keys_q.scope_fingerprint(secretish)


async def test_messages_show_outbox_backlog_per_topic_and_partition(store: Store) -> None:
    from convergent.messages import Message
    from convergent.outbox.emit import insert_messages

    async with store.begin() as conn:
        await insert_messages(
            conn,
            [Message(topic="t.orders", key=f"k{i}", type="x", data={}) for i in range(3)],
        )
        data = await messages_q.messages(conn)
    assert sum(row.backlog for row in data.outbox) == 3
    assert {row.topic for row in data.outbox} == {"t.orders"}


async def test_messages_show_parked_keys_per_group_and_the_letter_they_wait_for(
    store: Store,
) -> None:
    from convergent.ids import uuid7
    from convergent.store.schema import parked

    letter = uuid7()
    now = store.clock.now()
    rows = [("ledger", "acct-7", letter), ("ledger", "acct-7", None), ("ledger", "acct-9", None)]
    rows.append(("audit", "acct-7", None))
    async with store.begin() as conn:
        for group, key, dead in rows:
            await conn.execute(
                parked.insert().values(
                    consumer_group=group,
                    topic="t.invoices",
                    key=key,
                    message_id=str(uuid7()),
                    envelope={},
                    dead_letter_id=dead,
                    parked_at=now,
                )
            )
        data = await messages_q.messages(conn)
    assert data.parked == {("ledger", "t.invoices"): 2, ("audit", "t.invoices"): 1}
    first = data.parked_list[0]
    assert (first.consumer_group, first.key, first.messages) == ("ledger", "acct-7", 2)
    assert first.dead_letter_id == letter
    assert [(p.consumer_group, p.key) for p in data.parked_list[1:]] == [
        ("ledger", "acct-9"),
        ("audit", "acct-7"),
    ]


async def test_fleet_queues_show_their_limits_and_runs_pending(store: Store) -> None:
    from convergent.console.queries import schedules as schedules_q
    from convergent.store.schema import queues
    from convergent.workflows import Workflow, submit

    async def noop(ctx: object) -> None:
        return None

    flow: Workflow[[], None] = Workflow(noop, "console.test.queued", "default")
    for _ in range(2):
        await submit(store, flow, queue="payments")
    await submit(store, flow)  # the default queue: not a fleet queue
    async with store.begin() as conn:
        await conn.execute(
            queues.insert().values(
                name="payments", concurrency=4, rate_limit=10, rate_period=1.0,
                updated_at=store.clock.now(),
            )
        )  # fmt: skip
        [load] = await schedules_q.fleet_queues(conn)
    assert (load.queue.name, load.queue.concurrency, load.running, load.pending) == (
        "payments",
        4,
        0,
        2,
    )


async def test_run_detail_shows_child_runs_and_the_parent(store: Store) -> None:
    from convergent.store.schema import run_children
    from convergent.workflows import Workflow, submit

    async def noop(ctx: object) -> None:
        return None

    flow: Workflow[[], None] = Workflow(noop, "console.test.family", "default")
    parent = await submit(store, flow, key="order-1")
    children = [await submit(store, flow, key=f"child:{parent}:{seq}") for seq in (2, 3)]
    async with store.begin() as conn:
        for seq, child in zip((2, 3), children, strict=True):
            await conn.execute(
                run_children.insert().values(
                    parent_id=parent,
                    seq=seq,
                    child_id=child,
                    status="waiting",
                    created_at=store.clock.now(),
                )
            )
        of_parent = await runs_q.run_detail(conn, parent)
        of_child = await runs_q.run_detail(conn, children[1])
    assert [(c.id, c.seq, c.link) for c in of_parent.children] == [
        (children[0], 2, "waiting"),
        (children[1], 3, "waiting"),
    ]
    assert of_parent.parent is None
    assert of_child.parent.id == parent
    assert of_child.children == []
