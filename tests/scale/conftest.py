"""Fixtures for the scale-out tests (their helpers are in scale_checks.py: a test module named
`conftest` would be whichever test folder's conftest was imported first)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))


# us-dct-vit is the quickest zoo build (16 k params, 64x64 input); few runs keep each cell short.
FAST = {"runs": 3, "warmup": 1, "threads": 1}


@pytest.fixture
def fast_yaml() -> str:
    """The common tail of the test matrices: few runs, one thread per cell."""
    return "".join(f"{k}: {v}\n" for k, v in FAST.items())
