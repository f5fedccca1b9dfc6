"""Pytest fixtures for the calibration tests (builders live in calib_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def ramp12() -> np.ndarray:
    """A 32×32 uint16 ramp over the 12-bit range."""
    return (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 4).astype(np.uint16)
