"""Every ```python block in README.md and docs/ runs, each in a fresh interpreter and directory,
and checks what it shows: an ```output block right after it must match what it prints (a line
``...`` stands for any lines, ``...`` inside a line for any text), and a block without one asserts
its result itself.

A block fenced as ```python no-run is shown but not executed (for fragments that need servers).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(
    r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*\n"
    r"(?:[ \t]*\n)*(?:^```output[ \t]*\n(?P<out>.*?)^```)?",
    re.MULTILINE | re.DOTALL,
)
# blocks that define an application and are exercised by a test of their own
CHECKED_ELSEWHERE = {
    "README.md#1": "tests/integration/test_readme_quickstart.py",
    "docs/shop.md#2": "tests/acceptance/test_drill_app.py",
}


def _blocks() -> list[tuple[str, str, str | None]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    found = []
    for path in files:
        if not path.exists():
            continue
        for index, match in enumerate(FENCE.finditer(path.read_text())):
            where = f"{path.relative_to(ROOT)}#{index + 1}"
            found.append((where, match.group("code"), match.group("out")))
    return found


def matches(expected: str, printed: str) -> bool:
    """``...`` alone on a line matches any lines; inside a line it matches any text."""
    pattern = []
    for line in expected.strip("\n").splitlines():
        if line.strip() == "...":
            pattern.append(r"(?:.*\n)*?")
        else:
            pattern.append(".*".join(map(re.escape, line.rstrip().split("..."))) + r"[ \t]*\n")
    return re.fullmatch("".join(pattern), printed.strip("\n") + "\n") is not None


BLOCKS = _blocks()


@pytest.mark.parametrize(("where", "code", "output"), BLOCKS, ids=[w for w, _, _ in BLOCKS])
def test_documentation_example_runs(
    where: str, code: str, output: str | None, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, f"{where} failed:\n{proc.stdout}\n{proc.stderr}"
    if output is not None:
        assert matches(output, proc.stdout), f"{where} printed:\n{proc.stdout}\nexpected:\n{output}"


@pytest.mark.parametrize(("where", "code", "output"), BLOCKS, ids=[w for w, _, _ in BLOCKS])
def test_documentation_example_checks_what_it_shows(
    where: str, code: str, output: str | None
) -> None:
    if where in CHECKED_ELSEWHERE:
        assert (ROOT / CHECKED_ELSEWHERE[where]).exists()
        return
    assert output is not None or "assert " in code, (
        f"{where} neither asserts its result nor shows its output: add asserts, or an ```output "
        "block right after it with what it prints"
    )


@pytest.mark.parametrize(
    ("expected", "printed", "ok"),
    [
        ("a\nb", "a\nb\n", True),
        ("a\nb", "a\nc\n", False),
        ("run ... done", "run 42 done\n", True),
        ("first\n...\nlast", "first\nx\ny\nlast\n", True),
        ("first\n...\nlast", "first\nlast\n", True),
        ("first\nlast", "first\nx\nlast\n", False),
    ],
)
def test_output_matching(expected: str, printed: str, ok: bool) -> None:
    assert matches(expected, printed) is ok
