"""convergent inside the user's own Alembic environment, on SQLite and PostgreSQL.

A throwaway project (its own table, its own async ``env.py`` and history) runs convergent's
migrations both ways docs/storage.md describes, then ``alembic revision --autogenerate`` on its
metadata: the script it writes adds the user's new column and touches no ``convergent_*`` table.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from convergent.errors import NotMigrated
from convergent.store import Store
from convergent.store.alembic import VERSION_LOCATION
from convergent.store.schema import VERSION_TABLE

ENV_PY = """
import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import async_engine_from_config

from convergent.store.alembic import exclude_convergent
from userapp import metadata

config = context.config


def do_run_migrations(connection):
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=exclude_convergent(),
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    async with connectable.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


asyncio.run(run_async_migrations())
"""

USERAPP = """
import sqlalchemy as sa

metadata = sa.MetaData()
widgets = sa.Table(
    "widgets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("colour", sa.String(20), nullable=True),  # added since revision u1
)
"""

FIRST_REVISION = '''
"""widgets

Revision ID: u1
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "u1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "widgets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )


def downgrade():
    op.drop_table("widgets")
'''


def _project(root: Path, url: str, *, branch: bool) -> Config:
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    template = Path(command.__file__).parent / "templates" / "async" / "script.py.mako"
    (root / "migrations" / "script.py.mako").write_text(template.read_text())
    (root / "migrations" / "versions" / "u1_widgets.py").write_text(FIRST_REVISION)
    (root / "userapp.py").write_text(USERAPP)
    locations = "%(here)s/migrations/versions"
    if branch:
        locations += f"\n    {VERSION_LOCATION}"
    (root / "alembic.ini").write_text(
        textwrap.dedent(
            """\
            [alembic]
            script_location = %(here)s/migrations
            path_separator = newline
            version_locations =
                {locations}
            """
        ).format(locations=locations)
    )
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userapp", raising=False)
    return tmp_path


def _autogenerate(cfg: Config, root: Path, head: str) -> str:
    command.revision(cfg, "add colour", autogenerate=True, rev_id="u2", head=head)
    (script,) = (root / "migrations" / "versions").glob("u2_*.py")
    return script.read_text()


def _assert_only_the_users_change(script: str) -> None:
    upgrade = script.split("def upgrade", 1)[1].split("def downgrade", 1)[0]
    assert "op.add_column('widgets'" in upgrade
    assert "colour" in upgrade
    assert "convergent" not in script
    assert "drop_table" not in script


def _tables(url: str) -> set[str]:
    async def go() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_autogenerate_in_a_separate_history_ignores_convergent_tables(
    blank_database_url: str, user_project: Path
) -> None:
    cfg = _project(user_project, blank_database_url, branch=False)
    asyncio.run(_migrate(blank_database_url))  # `convergent migrate`
    command.upgrade(cfg, "head")
    tables = _tables(blank_database_url)
    assert {"widgets", "alembic_version", VERSION_TABLE, "convergent_runs"} <= tables

    _assert_only_the_users_change(_autogenerate(cfg, user_project, head="head"))


def test_convergent_as_a_labelled_branch_of_the_users_history(
    blank_database_url: str, user_project: Path
) -> None:
    cfg = _project(user_project, blank_database_url, branch=True)
    command.upgrade(cfg, "u1")  # only the user's own revision so far

    async def not_yet() -> None:
        async with Store(blank_database_url) as store:
            with pytest.raises(NotMigrated, match="or `alembic upgrade heads` if convergent's"):
                await store.check_schema()

    asyncio.run(not_yet())
    command.upgrade(cfg, "heads")  # the user's revisions and the `convergent` branch
    tables = _tables(blank_database_url)
    assert {"widgets", "convergent_runs", "convergent_outbox"} <= tables
    assert VERSION_TABLE not in tables  # one history: the user's alembic_version

    async def check() -> None:
        async with Store(blank_database_url) as store:
            state = await store.schema_state()
            assert state.in_app_history
            assert state.revision == state.head
            await store.check_schema()
            await store.migrate()  # only checks: alembic owns this history

    asyncio.run(check())
    _assert_only_the_users_change(_autogenerate(cfg, user_project, head="u1"))


def test_without_the_filter_autogenerate_would_drop_convergent_tables(
    blank_database_url: str,
) -> None:
    """Why env.py needs `exclude_convergent`: our tables are not in the user's metadata."""
    asyncio.run(_migrate(blank_database_url))
    user = sa.MetaData()

    def diff(conn: sa.Connection) -> list[object]:
        return list(compare_metadata(MigrationContext.configure(conn), user))

    async def go() -> list[object]:
        engine = create_async_engine(blank_database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(diff)
        finally:
            await engine.dispose()

    dropped = {
        d[1].name for d in asyncio.run(go()) if isinstance(d, tuple) and d[0] == "remove_table"
    }
    assert "convergent_runs" in dropped


async def _migrate(url: str) -> None:
    async with Store(url) as store:
        await store.migrate()
