"""Export-suite fixtures: make tests/fixtures importable by the `medge` subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_models(monkeypatch):
    """Put tests/ on PYTHONPATH (subprocess) and sys.path (this process); return the module."""
    # keep the caller's PYTHONPATH (a worktree under test) after tests/
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import fixtures.tiny_models as module

    return module

