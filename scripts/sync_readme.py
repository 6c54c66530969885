"""Copy docs/<area>.md into the README between its include markers (``--check``: only compare).

The README is the one place users read; docs/<area>.md is where each area keeps its section next
to the tests that prove its code blocks are excerpts of the runnable examples/. A test runs
``--check`` so the two cannot drift.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGION = re.compile(
    r"(<!-- include: (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end: (?P=path) -->)", re.S
)


def rendered(path: str) -> str:
    text = (ROOT / path).read_text()
    return text.replace("](../", "](").rstrip() + "\n"


def sync(readme: str) -> str:
    return REGION.sub(lambda m: m.group(1) + rendered(m["path"]) + m.group(4), readme)


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    text = path.read_text()
    new = sync(text)
    if "--check" in argv:
        if new != text:
            print("README.md is out of date with docs/: run python scripts/sync_readme.py")
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
