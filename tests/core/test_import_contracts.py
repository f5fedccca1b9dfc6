"""The import contracts of docs/architecture.md (`.importlinter`): the rooms' layer order, apps that
import no toolchain room, common and runtimes that import nothing above them, and a zoo that imports only common."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# import-linter's CLI replaces the process's output streams, so it runs in its own process.
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def test_import_contracts_hold():
    proc = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert proc.stdout.count("KEPT") == 4 and "BROKEN" not in proc.stdout, proc.stdout[-4000:]
