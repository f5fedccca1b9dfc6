"""Helpers for the ECG app tests."""

from __future__ import annotations

import numpy as np


def runs_of_false(mask: np.ndarray, offset: int) -> list[dict]:
    """[{start, length}] of the runs where `mask` is False, indices shifted by `offset`."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (~mask).astype(np.int8), [0]])))
    return [{"start": int(a + offset), "length": int(b - a)} for a, b in zip(edges[::2], edges[1::2])]
