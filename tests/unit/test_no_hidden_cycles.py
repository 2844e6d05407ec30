"""No function-local import hides an import cycle: wherever module A imports module M inside a
function, M does not import A (directly or through other modules) at its top level. Local
imports stay allowed for what they are good for: start-up time and optional extras."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "convergent": ROOT / "src" / "convergent",
    "convergent_shop": ROOT / "shop" / "src" / "convergent_shop",
}


def _module_name(package: str, base: Path, path: Path) -> str:
    parts = [package, *path.relative_to(base).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
    found = {}
    for package, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            found[_module_name(package, base, path)] = ast.parse(path.read_text())
    return found


def _targets(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif node.module and node.level == 0:
        names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n in known}


def _top_level_imports(tree: ast.Module, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out |= _targets(node, known)
        elif isinstance(node, ast.If | ast.Try):  # guarded imports still run at import time
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    out |= _targets(inner, known)
    return out


def _local_imports(tree: ast.Module, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    out |= _targets(inner, known)
    return out


def test_no_function_local_import_hides_a_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _top_level_imports(tree, known) for name, tree in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph.get(current, ()))
        return False

    hidden = sorted(
        f"{name} imports {target} inside a function, and {target} imports {name}"
        for name, tree in modules.items()
        for target in _local_imports(tree, known)
        if target != name
        and not name.startswith(target + ".")
        and not target.startswith(name + ".")  # a package loading its own submodule lazily
        and reaches(target, name)
    )
    assert hidden == []
