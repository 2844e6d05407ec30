"""`convergent migrate --sql|--check` and the schema version a process checks at start."""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from convergent.cli import app
from convergent.errors import NotMigrated
from convergent.store import Store
from convergent.store.revisions import head_revision
from convergent.store.schema import VERSION_TABLE, include_object, metadata


async def _apply_script(url: str, script: str) -> None:
    """What a DBA does with the file: psql -f / sqlite3 < file."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as db:
            db.executescript(script)
        return
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await conn.execute(script)
    finally:
        await conn.close()


async def _schema_diff(store: Store) -> list[object]:
    def diff(conn: sa.Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": include_object, "compare_type": False}
        )
        return list(compare_metadata(ctx, metadata))

    async with store.read() as conn:
        return await conn.run_sync(diff)


async def _set_revision(store: Store, revision: str) -> None:
    async with store.begin() as conn:
        await conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :v"), {"v": revision})


def test_migrate_sql_prints_ddl_that_builds_the_declared_schema(blank_database_url: str) -> None:
    out = CliRunner().invoke(app, ["migrate", "--sql", "--database-url", blank_database_url])
    assert out.exit_code == 0, out.output
    assert "CREATE TABLE convergent_runs" in out.output

    async def go() -> None:
        await _apply_script(blank_database_url, out.output)
        async with Store(blank_database_url) as store:
            assert await _schema_diff(store) == []
            await store.check_schema()  # the version table says head
            await store.migrate()  # and migrate agrees: nothing left to do

    asyncio.run(go())


def test_migrate_sql_since_a_revision_prints_only_what_follows() -> None:
    out = CliRunner().invoke(app, ["migrate", "--sql", "--since", "convergent_0004"])
    assert out.exit_code == 0, out.output
    assert "CREATE TABLE convergent_webhook_endpoints" in out.output
    assert "CREATE TABLE convergent_runs" not in out.output


def test_migrate_sql_with_an_unknown_revision_names_the_known_ones() -> None:
    out = CliRunner().invoke(app, ["migrate", "--sql", "--since", "nope"])
    assert out.exit_code == 1
    assert "unknown revision 'nope'" in out.output
    assert "convergent_0001" in out.output


def test_migrate_check_fails_until_the_database_is_migrated(blank_database_url: str) -> None:
    check = ["migrate", "--check", "--database-url", blank_database_url]
    before = CliRunner().invoke(app, check)
    assert before.exit_code == 1
    assert "has no convergent tables: run `convergent migrate" in before.output
    assert "Traceback" not in before.output
    assert CliRunner().invoke(app, ["migrate", "--database-url", blank_database_url]).exit_code == 0
    after = CliRunner().invoke(app, check)
    assert after.exit_code == 0, after.output
    assert "up to date" in after.output


async def test_an_older_schema_names_the_revision_it_needs(database_url: str) -> None:
    async with Store(database_url) as store:
        await _set_revision(store, "convergent_0004")
        try:
            with pytest.raises(
                NotMigrated, match=f"needs {head_revision()}: run `convergent migrate"
            ):
                await store.check_schema()
        finally:
            await _set_revision(store, head_revision())


async def test_a_newer_schema_asks_to_upgrade_convergent(database_url: str) -> None:
    async with Store(database_url) as store:
        await _set_revision(store, "convergent_9999")
        try:
            with pytest.raises(NotMigrated, match="newer than this version knows"):
                await store.check_schema()
        finally:
            await _set_revision(store, head_revision())


async def test_revision_ids_from_before_the_branch_label_are_renamed(database_url: str) -> None:
    async with Store(database_url) as store:
        await _set_revision(store, head_revision().removeprefix("convergent_"))  # e.g. "0005"
        await store.check_schema()  # read as ours
        await store.migrate()
        async with store.read() as conn:
            rows = (await conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}"))).all()
        assert rows == [(head_revision(),)]
