"""Every link of README.md and docs/*.md resolves: relative files exist and ``#anchors`` name a
heading of the target page (GitHub's slugs). Absolute http(s) links are not fetched."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\S\n]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
LINK = re.compile(
    r"!?\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\((?P<target>[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+\"[^\"]*\")?\)"
)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto: ...


def prose(text: str) -> str:
    """``text`` without fenced code blocks (their ``#`` lines are comments, not headings)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation other than ``-``
    and ``_`` removed, each space turned into ``-``."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text stays
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of ``page``; the second heading with the same slug gets ``-1``, and so on."""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(prose(page.read_text())):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text()))
    return [m["target"] for m in LINK.finditer(text)]


def broken(page: Path, target: str) -> str | None:
    """Why ``target`` (a link on ``page``) does not resolve, or None."""
    if EXTERNAL.match(target):
        return None  # not checked over the network
    path, _, anchor = target.partition("#")
    dest = (page.parent / unquote(path)).resolve() if path else page
    if not dest.exists():
        return f"{dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist"
    if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
        return f"no heading with the anchor #{anchor} in {dest.relative_to(ROOT)}"
    return None


def test_slugs_follow_github():
    assert slug("`tfd.DataLoader`") == "tfddataloader"
    assert slug("Files: image folders, annotation files, MNIST, and caching") == (
        "files-image-folders-annotation-files-mnist-and-caching"
    )
    assert slug('Caching any map-style dataset: `ds.cache("memory")` / `ds.cache(path)`') == (
        "caching-any-map-style-dataset-dscachememory--dscachepath"
    )
    assert slug("The demo: `tensorfeed demo kafka`") == "the-demo-tensorfeed-demo-kafka"
    assert slug("Snake_case and [a link](x.md)") == "snake_case-and-a-link"


def test_duplicate_headings_are_numbered(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A\n## Errors\n```python\n# Errors\n```\n### Errors\n## Errors!\n")
    assert anchors(page) == {"a", "errors", "errors-1", "errors-2"}


def test_links_in_code_are_not_links(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("`x[0](1)` [ok](p.md)\n```\n[no](missing.md)\n```\n")
    assert links(page) == ["p.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page):
    problems = [
        f"{page.relative_to(ROOT)}: [{target}]: {why}"
        for target in links(page)
        if (why := broken(page, target))
    ]
    assert not problems, "broken links:\n" + "\n".join(problems)
