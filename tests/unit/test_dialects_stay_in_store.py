"""Only ``convergent.store`` knows which database it is on (import-linter checks the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

import convergent
import convergent_shop

PACKAGE = Path(convergent.__file__).parent
SHOP = Path(convergent_shop.__file__).parent  # an app: it uses the same interface


def _asks_for_the_database(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "sqlalchemy.dialects"
        ):
            found.append(f"{path.name}:{node.lineno} imports {node.module}")
        elif isinstance(node, ast.Import) and any(
            a.name.startswith("sqlalchemy.dialects") for a in node.names
        ):
            found.append(f"{path.name}:{node.lineno} imports sqlalchemy.dialects")
        elif isinstance(node, ast.Attribute) and node.attr in ("dialect", "is_postgres"):
            found.append(f"{path.name}:{node.lineno} reads .{node.attr}")
    return found


def test_no_module_outside_the_store_branches_on_the_database() -> None:
    outside = [
        path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] != "store"
    ]
    assert len(outside) > 50  # the walk found the package
    outside += list(SHOP.rglob("*.py"))
    found = [hit for path in outside for hit in _asks_for_the_database(path)]
    assert found == [], "use store_of(conn).sql (convergent/store/dialect.py) instead"
