"""convergent's migrations beside YOUR Alembic environment.

Pick one of two ways per database (docs/storage.md, "Alembic"):

- **separate history** (the default): `convergent migrate` / ``Store.migrate()`` apply our
  migrations and record them in ``convergent_alembic_version``; your ``env.py`` passes
  ``include_object=exclude_convergent()`` (or `include_name`) so that ``alembic revision
  --autogenerate`` on your metadata never proposes to touch a ``convergent_*`` table.
- **a branch of your history**: add `VERSION_LOCATION` to your ``version_locations``; our
  revisions form the branch labelled `BRANCH`, ``alembic upgrade heads`` applies them, and your
  ``alembic_version`` records its head. ``Store.migrate()`` then only checks that head.

Either way your ``env.py`` needs the filter: the tables exist in the database but not in your
metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "BRANCH",
    "PREFIX",
    "VERSION_LOCATION",
    "IncludeObject",
    "exclude_convergent",
    "include_name",
    "include_object",
    "is_convergent_table",
]

#: the branch label of our first revision: ``alembic upgrade convergent@head``
BRANCH = "convergent"
#: for your ``version_locations`` (package-resource notation, resolved by Alembic)
VERSION_LOCATION = "convergent.store.migrations:versions"
#: every table, index and revision id of ours starts with this
PREFIX = "convergent_"

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]


def is_convergent_table(name: str | None) -> bool:
    return bool(name) and str(name).startswith(PREFIX)


def _table_of(obj: Any, name: str | None, type_: str) -> str | None:
    if type_ == "table":
        return name
    table = getattr(obj, "table", None)  # columns, indexes, constraints
    return getattr(table, "name", None)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic ``include_object`` hook that leaves convergent's tables (and what is on them) out
    of autogenerate; pass it to ``context.configure`` in your ``env.py``."""
    return not is_convergent_table(_table_of(obj, name, type_))


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic ``include_name`` hook: the same filter applied before reflection (cheaper on a
    database with many tables)."""
    if type_ == "table":
        return not is_convergent_table(name)
    if type_ in ("column", "index", "unique_constraint", "foreign_key_constraint"):
        return not is_convergent_table(parent_names.get("table_name"))
    return True


def exclude_convergent(include_object: IncludeObject | None = None) -> IncludeObject:
    """Your own ``include_object`` (if any), with convergent's tables left out as well."""
    yours = include_object

    def hook(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if is_convergent_table(_table_of(obj, name, type_)):
            return False
        return yours is None or yours(obj, name, type_, reflected, compare_to)

    return hook
