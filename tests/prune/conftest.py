"""Pruning test helpers: the residual fixture models are importable by the CLI subprocess."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def residual_models_on_path(monkeypatch):
    """Put tests/prune on PYTHONPATH so that ``residual_models:<factory>`` imports in the CLI."""
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(HERE) + (os.pathsep + old if old else ""))
