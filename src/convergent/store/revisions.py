"""Which of our migrations a database has, where that is recorded, and the DDL to get to head.

Our history lives in ``convergent_alembic_version`` when `convergent migrate` applies it, or in
the application's ``alembic_version`` when our revisions are a branch of its Alembic environment
(`convergent.store.alembic`). Revisions before 0.2 were named ``0001``…; they are read as
``convergent_0001``… and renamed on the next migrate.
"""

from __future__ import annotations

import functools
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from convergent.errors import ConfigurationError, NotMigrated
from convergent.store.alembic import PREFIX
from convergent.store.schema import VERSION_TABLE

__all__ = [
    "APP_VERSION_TABLE",
    "SchemaState",
    "alembic_config",
    "head_revision",
    "migration_sql",
    "read_state",
    "upgrade",
]

MIGRATIONS = Path(__file__).parent / "migrations"
#: the version table of the application's own Alembic environment (Alembic's default name)
APP_VERSION_TABLE = "alembic_version"
_LEGACY = re.compile(r"\d{4}")


def alembic_config(connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def head_revision() -> str:
    return str(_script().get_current_head())


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(r.revision for r in _script().walk_revisions())


def _ours(revision: str) -> str | None:
    if revision.startswith(PREFIX):
        return revision
    return PREFIX + revision if _LEGACY.fullmatch(revision) else None


@dataclass(frozen=True)
class SchemaState:
    """Our revision in a database (None: never migrated) and the table that records it."""

    revision: str | None
    table: str | None
    head: str
    #: the database has an application Alembic history (ours may be meant to join it)
    app_history: bool = False

    @property
    def in_app_history(self) -> bool:
        return self.table == APP_VERSION_TABLE

    def problem(self, url: sa.URL) -> NotMigrated | None:
        """Why a process must not start on this database, as an error naming the fix."""
        where = url.render_as_string(hide_password=True)
        same = "with the same --database-url" if url.password else f"--database-url {where}"
        fix = (
            "run `alembic upgrade heads` in your Alembic project"
            if self.in_app_history
            else f"run `convergent migrate {same}`"
        )
        if self.revision is None:
            if self.app_history:
                fix += (
                    " (or `alembic upgrade heads` if convergent's migrations are a branch of yours)"
                )
            return NotMigrated(f"database {where} has no convergent tables: {fix}")
        if self.revision == self.head:
            return None
        if self.revision in known_revisions():
            return NotMigrated(
                f"database {where} is at convergent revision {self.revision}, this version needs "
                f"{self.head}: {fix}"
            )
        return NotMigrated(
            f"database {where} is at convergent revision {self.revision}, newer than this "
            f"version knows (head {self.head}): upgrade convergent"
        )


def read_state(connection: sa.Connection) -> SchemaState:
    inspector = sa.inspect(connection)
    app_history = inspector.has_table(APP_VERSION_TABLE)
    for table in (VERSION_TABLE, APP_VERSION_TABLE):
        if not inspector.has_table(table):
            continue
        rows = connection.execute(sa.text(f"SELECT version_num FROM {table}")).scalars()
        found = [r for r in (_ours(str(v)) for v in rows) if r is not None]
        if found:
            return SchemaState(found[0], table, head_revision(), app_history)
    return SchemaState(None, None, head_revision(), app_history)


def upgrade(connection: sa.Connection) -> None:
    """Bring our tables to head, in our own history; in the app's history only check it."""
    from alembic import command

    state = read_state(connection)
    if state.in_app_history:
        if state.revision != state.head:
            raise ConfigurationError(
                f"convergent's migrations are a branch of your Alembic history in this database "
                f"({APP_VERSION_TABLE} has {state.revision}, head is {state.head}): "
                "run `alembic upgrade heads`"
            )
        return
    if state.revision is not None:  # rename pre-0.2 revision ids in place
        connection.execute(
            sa.text(f"UPDATE {VERSION_TABLE} SET version_num = :new WHERE version_num = :old"),
            {"new": state.revision, "old": state.revision.removeprefix(PREFIX)},
        )
    command.upgrade(alembic_config(connection), "head")


def migration_sql(dialect: str, since: str | None = None) -> str:
    """The DDL (Alembic offline mode) that brings a ``dialect`` database from ``since`` (None:
    empty) to head, version-table writes included."""
    from alembic import command

    if since is not None:
        since = _ours(since) or since
        if since not in known_revisions():
            raise ConfigurationError(
                f"unknown revision {since!r}: use one of {', '.join(sorted(known_revisions()))}"
            )
    buffer = io.StringIO()
    cfg = alembic_config()
    cfg.output_buffer = buffer
    cfg.attributes["dialect_name"] = dialect
    if since is not None and since.startswith(PREFIX):  # a database migrated before 0.2
        old = since.removeprefix(PREFIX)
        buffer.write(
            f"UPDATE {VERSION_TABLE} SET version_num = '{since}' WHERE version_num = '{old}';\n\n"
        )
    command.upgrade(cfg, f"{since}:head" if since else "head", sql=True)
    return buffer.getvalue()
