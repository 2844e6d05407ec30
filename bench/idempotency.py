"""Idempotency-Key overhead: the same endpoint bare vs behind IdempotencyMiddleware.

Both apps run in-process over httpx's ASGITransport with the same handler (one INSERT in one
transaction), on SQLite and on PostgreSQL, in one run. Cases: bare, new key, replay. Rounds of
each case are interleaved so drift hits all three alike. Prints p50/p99, ratio and added ms.
On PostgreSQL also the floor: the statements of a bare request and of a new key's (the same
claim and stored answer) sent straight through asyncpg on a connection of its own, no HTTP and no
SQLAlchemy, so the new key's added cost can be set against what the two statements alone cost.

    python bench/idempotency.py [--quick] [--requests N] [--skip-sqlite] [--skip-postgres]

PostgreSQL: the server of CONVERGENT_TEST_PG_URL (a database of its own is created and dropped).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI, Request
from sqlalchemy.ext.asyncio import create_async_engine

from convergent import eventloop
from convergent.http import IdempotencyMiddleware, header_principal, transaction
from convergent.ids import new_id
from convergent.store import Store, direct

PG_ADMIN = os.environ.get(
    "CONVERGENT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
meta = sa.MetaData()
things = sa.Table(
    "bench_things",
    meta,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("body", sa.JSON(), nullable=False),
)
CPU: list[float] = []  # this process's CPU ms per request: barely moves with machine load
BODY = {"customer_id": "c1", "items": [{"sku": "s", "qty": 1}], "amount": "5.00"}


def build(store: Store, protected: bool) -> FastAPI:
    app = FastAPI()
    app.state.store = store

    @app.post("/things", status_code=201)
    async def create(request: Request) -> dict[str, Any]:
        body = await request.json()
        thing_id = new_id()
        async with transaction(request) as conn:
            await conn.execute(things.insert().values(id=thing_id, body=body))
        return {"id": thing_id}

    if protected:
        app.add_middleware(
            IdempotencyMiddleware,
            store=store,
            routes=[("POST", "/things")],
            principal=header_principal("X-Api-Key"),
        )
    return app


async def timed(http: httpx.AsyncClient, key: str | None) -> float:
    headers = {"X-Api-Key": "bench"}
    if key:
        headers["Idempotency-Key"] = key
    start, cpu = time.perf_counter(), time.process_time()
    response = await http.post("/things", json=BODY, headers=headers)
    elapsed = time.perf_counter() - start
    CPU.append((time.process_time() - cpu) * 1000)
    assert response.status_code == 201, response.text
    return elapsed * 1000


async def statements(store: Store, http: httpx.AsyncClient, key: str | None) -> int:
    """Statements (incl. BEGIN/COMMIT) one request sends: a load-independent cost. On PostgreSQL
    counted at the driver, so statements sent without SQLAlchemy count too."""
    sent: list[str] = []
    if store.sql.name == "postgresql":
        return await _driver_statements(http, key)

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    def count_commit(conn: Any) -> None:
        sent.append("COMMIT")

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    sa.event.listen(store.engine.sync_engine, "commit", count_commit)
    straight = direct.sent()  # statements sent to SQLite without SQLAlchemy's events
    try:
        await timed(http, key)
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", count)
        sa.event.remove(store.engine.sync_engine, "commit", count_commit)
    return len(sent) + direct.sent() - straight


async def _driver_statements(http: httpx.AsyncClient, key: str | None) -> int:
    """Round trips through asyncpg: its query methods and prepared statements' (BEGIN and
    COMMIT are ``Connection.execute``)."""
    import asyncpg  # only with PostgreSQL

    calls = [0]
    patched: list[tuple[Any, str, Any]] = []
    for cls, names in (
        (asyncpg.Connection, ("execute", "executemany", "fetch", "fetchrow", "fetchval")),
        (asyncpg.prepared_stmt.PreparedStatement, ("fetch", "fetchrow", "fetchval")),
    ):
        for name in names:
            original = getattr(cls, name)

            def wrapper(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                calls[0] += 1
                return _original(*args, **kwargs)

            patched.append((cls, name, original))
            setattr(cls, name, wrapper)
    try:
        await timed(http, key)
    finally:
        for cls, name, original in patched:
            setattr(cls, name, original)
    return calls[0]


class Floor:
    """A bare request's and a new key's statements straight through asyncpg (PostgreSQL)."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def bare(self) -> None:
        await self.driver.execute("BEGIN")
        await self.driver.execute(_INSERT, new_id(), json.dumps(BODY))
        await self.driver.execute("COMMIT")

    async def new_key(self) -> None:
        from convergent.store.postgres_keys import _CLAIM, _COMPLETE  # the statements it sends

        now = datetime.now(UTC)
        key, later = new_id(), now + timedelta(days=1)
        await self.driver.fetchrow(_CLAIM, "bench", key, "f" * 64, now, now, later)
        await self.driver.execute("BEGIN")
        thing = new_id()
        await self.driver.execute(_INSERT, thing, json.dumps(BODY))
        headers = json.dumps([["content-type", "application/json"]])
        answer = json.dumps({"id": thing}).encode()
        await self.driver.execute(_COMPLETE, "bench", key, now, 201, headers, answer, now, later)
        await self.driver.execute("COMMIT")


_INSERT = "INSERT INTO bench_things (id, body) VALUES ($1, $2::json)"


async def floor_timed(step: Any) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    await step()
    elapsed = time.perf_counter() - start
    CPU.append((time.process_time() - cpu) * 1000)
    return elapsed * 1000


async def measure(url: str, requests: int) -> dict[str, list[float]]:
    store = Store(url)
    await store.migrate()
    async with store.begin() as conn:
        await conn.run_sync(meta.create_all)
    bare = httpx.AsyncClient(
        transport=httpx.ASGITransport(build(store, False)), base_url="http://b"
    )
    idem = httpx.AsyncClient(transport=httpx.ASGITransport(build(store, True)), base_url="http://i")
    cases = ["bare", "new key", "replay"]
    floor = None
    if store.sql.name == "postgresql":
        import asyncpg  # only with PostgreSQL

        floor = Floor(await asyncpg.connect(url.replace("+asyncpg", "")))
        cases += ["floor bare", "floor new key"]
    samples: dict[str, list[float]] = {case: [] for case in cases}
    cpu: dict[str, list[float]] = {case: [] for case in cases}
    replay_key = new_id()
    try:
        await timed(idem, replay_key)
        for _ in range(50):  # warm-up: pools, statement caches
            await timed(bare, None)
            await timed(idem, new_id())
            await timed(idem, replay_key)
            if floor is not None:
                await floor_timed(floor.bare)
                await floor_timed(floor.new_key)
        counts = [
            await statements(store, bare, None),
            await statements(store, idem, new_id()),
            await statements(store, idem, replay_key),
        ]
        print(f"{store.sql.name:10} statements per request: bare/new key/replay = {counts}")
        for _ in range(max(1, requests // 50)):
            for _ in range(50):
                samples["bare"].append(await timed(bare, None))
                cpu["bare"].append(CPU[-1])
            for _ in range(50):
                samples["new key"].append(await timed(idem, new_id()))
                cpu["new key"].append(CPU[-1])
            for _ in range(50):
                samples["replay"].append(await timed(idem, replay_key))
                cpu["replay"].append(CPU[-1])
            if floor is None:
                continue
            for case, step in (("floor bare", floor.bare), ("floor new key", floor.new_key)):
                for _ in range(50):
                    samples[case].append(await floor_timed(step))
                    cpu[case].append(CPU[-1])
    finally:
        if floor is not None:
            await floor.driver.close()
        await bare.aclose()
        await idem.aclose()
        await store.close()
    return {**samples, **{f"{case} cpu": values for case, values in cpu.items()}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(db: str, samples: dict[str, list[float]]) -> None:
    for case, values in samples.items():
        bare = "floor bare" if case.startswith("floor") else "bare"
        base = statistics.median(samples[f"{bare} cpu" if case.endswith("cpu") else bare])
        p50 = statistics.median(values)
        print(
            f"{db:10} {case:17} n={len(values):5} p50={p50:7.3f} ms p99={pct(values, 0.99):7.3f} ms"
            f"  ratio={p50 / base:5.2f}  added={p50 - base:+7.3f} ms"
        )


async def pg_database(create: bool, name: str) -> None:
    engine = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            if create:
                await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            else:
                await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 10 s)")
    parser.add_argument("--requests", type=int, default=None, help="requests per case")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    requests = args.requests or (200 if args.quick else 1000)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            report("sqlite", await measure(f"sqlite+aiosqlite:///{tmp}/bench.db", requests))
    if args.skip_postgres:
        return
    name = f"convergent_bench_{os.getpid()}"
    await pg_database(True, name)
    try:
        report("postgresql", await measure(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}", requests))
    finally:
        await pg_database(False, name)


if __name__ == "__main__":
    eventloop.tune_gc()  # as the CLI's processes do
    eventloop.run(main())
