"""Export-suite fixtures: make tests/fixtures importable by the `medge` subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_models(monkeypatch):
    """Put tests/ on PYTHONPATH (subprocess) and sys.path (this process); return the module."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), *([existing] if existing else [])]))
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    import fixtures.tiny_models as module

    return module

