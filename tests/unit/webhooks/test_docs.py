"""Every python block in docs/webhooks.md runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parents[3] / "docs" / "webhooks.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_the_example_runs(code: str) -> None:
    exec(compile(code, str(DOC), "exec"), {"__name__": "__main__"})
