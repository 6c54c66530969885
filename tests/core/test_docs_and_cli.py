"""The README's code runs, and the command line behaves (errors as one line, no passwords)."""

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


INCLUDED = re.compile(r"<!-- include: (\S+) -->\n.*?<!-- end: \1 -->", re.S)


def readme_blocks() -> list[str]:
    """Python blocks of the README that run here. Blocks inside an included docs/<area>.md are
    excerpts of examples/ that the area's tests run and check."""
    text = INCLUDED.sub("", (ROOT / "README.md").read_text())
    return [m["code"] for m in BLOCK.finditer(text)]


def test_readme_includes_every_docs_section_verbatim():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    text = (ROOT / "README.md").read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"<!-- include: docs/{doc.name} -->" in text, f"README does not include {doc.name}"


def test_readme_has_the_two_setup_commands_first():
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert "torch==2.13.0" in first[0] and "tensorfeed demo" in first[0]
    assert first[1] == "bash scripts/test.sh"
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", range(len(readme_blocks())))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_blocks()[index]
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "__readme__"})


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
