"""The README and the non-excerpt docs pages run, and the command line behaves (errors as one line,
no passwords)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tensorfeed.cli import main, redact

ROOT = Path(__file__).resolve().parents[2]


BLOCK = re.compile(r"```python\n(?P<code>.*?)```", re.S)

# docs pages whose python blocks are excerpts of examples/ (tests/docs_excerpts.py): the area's
# own tests run those examples. The blocks of every other page, and of the README, run here.
EXCERPT_PAGES = {"essentials.md", "files.md", "kafka.md", "lake.md", "sql.md"}


def runnable_blocks() -> list[tuple[str, str]]:
    """``(page, code)`` of every python block of the README and of the docs pages that are not
    excerpt pages, in order."""
    pages = [ROOT / "README.md"] + [
        p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in EXCERPT_PAGES
    ]
    return [
        (str(page.relative_to(ROOT)), m["code"])
        for page in pages
        for m in BLOCK.finditer(page.read_text())
    ]


BLOCKS = runnable_blocks()


def test_readme_has_the_two_setup_commands_first():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(\w*)\n(.*?)```", text, flags=re.S)
    assert first_block.group(1) == "bash", "the README's first code block is the set-up commands"
    first = first_block.group(2).strip().splitlines()
    assert len(first) == 2
    for part in ("torch==2.13.0", "constraints.txt", "tensorfeed demo"):
        assert part in first[0], f"the first set-up command lacks {part!r}"
    assert first[0].index("torch==2.13.0") < first[0].index("constraints.txt")
    assert first[1] == "bash scripts/test.sh"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300, "README.md is the front page: move detail to docs/"
    assert "<!-- include:" not in text
    for kind in ("SQLDataset", "LakeDataset", "KafkaStream", "ImageFolder", "MemoryDataset"):
        assert any(kind in code for page, code in BLOCKS if page == "README.md"), kind


def test_every_error_class_is_documented_with_its_builtin():
    import tensorfeed.errors as errors

    readme = (ROOT / "README.md").read_text()
    rows = {
        line.split("|")[1].strip(): line
        for line in (ROOT / "docs" / "errors.md").read_text().splitlines()
        if line.startswith("| `tfd.")
    }
    for name, cls in vars(errors).items():
        if not (isinstance(cls, type) and issubclass(cls, errors.TensorfeedError)):
            continue
        assert name in readme, f"README.md's error tree lacks {name}"
        row = rows.get(f"`tfd.{name}`")
        assert row is not None, f"docs/errors.md has no row for tfd.{name}"
        builtins = [
            b
            for b in cls.__mro__[1:]
            if b.__module__ == "builtins" and b not in (Exception, BaseException, object)
        ]
        if builtins:  # TensorfeedError and TransientError are plain Exceptions
            assert f"`{builtins[0].__name__}`" in row, f"docs/errors.md: {name} is a {builtins[0]}"
        for base in cls.__bases__:
            if base.__module__ != "builtins":
                assert f"`{base.__name__}`" in row, f"docs/errors.md: {name} derives from {base}"


@pytest.mark.parametrize(
    ("page", "code"), BLOCKS, ids=[f"{page}-{i}" for i, (page, _) in enumerate(BLOCKS)]
)
def test_readme_python_blocks_run(page, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page} block", "exec"), {"__name__": "__readme__"})


def test_redact_hides_passwords():
    assert redact("postgresql://alice:s3cr3t@db:5432/shop") == "postgresql://alice:***@db:5432/shop"
    assert redact("sqlite:///x.db") == "sqlite:///x.db"


def test_unsupported_scheme_is_one_clean_line(capsys):
    assert main(["bench", "mysql://bob:hunter2@host/db", "--table", "t"]) == 2
    err = capsys.readouterr().err
    assert "unsupported URL scheme 'mysql'" in err or "mysql" in err
    assert "hunter2" not in err and "Traceback" not in err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "tensorfeed.cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 0 and "demo" in out.stdout
