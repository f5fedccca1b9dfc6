"""The import contracts of docs/architecture.md (`.importlinter`): the rooms' layer order, apps that
import no toolchain room, common and runtimes that import nothing above them, and a zoo that imports only common."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# import-linter's CLI replaces the process's output streams, so it runs in its own process.
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def test_import_contracts_hold():
    proc = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert proc.stdout.count("KEPT") == 4 and "BROKEN" not in proc.stdout, proc.stdout[-4000:]


def test_no_package_file_is_ignored_by_git():
    """A clean clone must hold every module: a `.gitignore` pattern once hid `medge/build/__init__.py`."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    sources = [str(p.relative_to(ROOT)) for p in (ROOT / "medge").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    proc = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(sources),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "", f"package files ignored by .gitignore: {proc.stdout.split()}"
