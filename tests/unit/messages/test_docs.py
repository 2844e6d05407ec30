"""The python blocks of docs/messages.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convergent.outbox.consumer import CONSUMERS
from convergent.topics import TOPICS

DOC = Path(__file__).parents[3] / "docs" / "messages.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_the_docs_example_runs(block: int) -> None:
    before = dict(TOPICS)
    consumers = list(CONSUMERS)
    try:
        exec(compile(BLOCKS[block], f"docs/messages.md#{block}", "exec"), {})
    finally:
        TOPICS.clear()
        TOPICS.update(before)
        CONSUMERS[:] = consumers
