"""The check every area's docs share: each ```python block of docs/<area>.md is exactly one marked
excerpt (``# --8<-- [start:name]`` ... ``# --8<-- [end:name]``) of an example the area's tests run,
and every excerpt is shown, so a docs block cannot drift from code that runs."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_MARKED = re.compile(r"# --8<-- \[start:(\w+)\]\n(.*?)\n\s*# --8<-- \[end:\1\]", re.S)


def excerpts(examples: Sequence[Path]) -> dict[str, str]:
    """``{"file.py:name": dedented text}`` of every marked excerpt in ``examples``."""
    return {
        f"{path.name}:{m.group(1)}": textwrap.dedent(m.group(2)).strip()
        for path in examples
        for m in _MARKED.finditer(path.read_text())
    }


def assert_docs_blocks_are_excerpts(doc: str, examples: Sequence[Path]) -> None:
    docs = (REPO / "docs" / doc).read_text()
    blocks = [b.strip() for b in re.findall(r"```python\n(.*?)```", docs, re.S)]
    found = excerpts(examples)
    assert blocks, f"docs/{doc} has no python code block"
    for block in blocks:
        assert block in found.values(), f"this docs/{doc} block is not in examples/:\n{block}"
    assert len(blocks) == len(found)
