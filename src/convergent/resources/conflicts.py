"""What to do when two writers update the same resource: reject, last write wins, or merge."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from convergent.errors import ConfigurationError, StaleVersion
from convergent.resources.table import ResourceTable, Row

__all__ = ["ConflictPolicy", "Merge", "update_with_policy"]

#: ``merge(current_row, proposed_values) -> values to write`` (called again on every conflict)
Merge = Callable[[Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]


class ConflictPolicy(enum.StrEnum):
    REJECT = "reject"  # StaleVersion goes back to the caller (HTTP 412 / 409)
    LAST_WRITE_WINS = "last_write_wins"  # the version is bumped but not checked
    MERGE = "merge"  # re-read, merge, retry a bounded number of times


async def update_with_policy(
    resource: ResourceTable,
    conn: AsyncConnection,
    resource_id: Any,
    values: Mapping[str, Any],
    *,
    expected_version: int | None,
    policy: ConflictPolicy | str = ConflictPolicy.REJECT,
    merge: Merge | None = None,
    attempts: int = 5,
    actor: str | None = None,
) -> Row:
    """Update fields of a resource under ``policy``; raises StaleVersion when it gives up."""
    policy = ConflictPolicy(policy)
    if policy is ConflictPolicy.LAST_WRITE_WINS:
        return await resource.update_fields(conn, resource_id, values, actor=actor)
    if policy is ConflictPolicy.REJECT:
        return await resource.update_fields(
            conn, resource_id, values, expected_version=expected_version, actor=actor
        )
    if merge is None:
        raise ConfigurationError("the merge policy needs a merge function")
    proposed: Mapping[str, Any] = values
    version = expected_version
    for _ in range(max(1, attempts)):
        try:
            return await resource.update_fields(
                conn, resource_id, proposed, expected_version=version, actor=actor
            )
        except StaleVersion:
            current = await resource.get(conn, resource_id)
            if current is None:
                raise
            proposed = merge(dict(current._mapping), values)
            version = current._mapping[resource.version_column]
    raise StaleVersion(f"gave up merging {resource.resource_type} {resource_id} after {attempts}")
