"""Alembic environment for convergent's own tables (version table: convergent_alembic_version)."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from convergent.store.schema import VERSION_TABLE, include_object, metadata


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    options: dict[str, Any] = {
        "target_metadata": metadata,
        "version_table": VERSION_TABLE,
        "include_object": include_object,
        "render_as_batch": True,
        "compare_type": True,
    }
    if context.is_offline_mode():  # `convergent migrate --sql`: DDL for a DBA to apply
        context.configure(
            dialect_name=config.attributes["dialect_name"], literal_binds=True, **options
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    if connection is not None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("run migrations with `convergent migrate` or Store.migrate()")
    engine = create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, **options)
        with context.begin_transaction():
            context.run_migrations()


run()
