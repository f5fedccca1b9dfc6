"""Synthetic medical data for demos, calibration and tests: ``generate(task, n, seed, **kw)``.

Tasks (inputs are raw, i.e. before the model's mean/std normalisation):

* ``cxr``: chest X-ray phantoms (n, 224, 224) float32 in [0, 1]; targets (n, 4) multi-hot
  float32 for effusion, pneumothorax, nodule, cardiomegaly.
* ``us-frame``: B-mode ultrasound frames (n, 128, 128) in [0, 1]; targets (n,) 0/1 lesion present.
* ``us-seg``: B-mode frames (n, 256, 256) in [0, 1]; targets (n, 256, 256) uint8 lesion masks.
* ``ecg``: leads II, V1, V5 (n, 3, 5000) in mV at 500 Hz; targets all 12 leads (n, 12, 5000) mV.

Everything is deterministic from `seed` and vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medge.common.errors import DataError, did_you_mean

TASKS: tuple[str, ...] = ("cxr", "us-frame", "us-seg", "ecg")
CHUNK = 64  # images generated per vectorised batch (bounds peak memory)


def _generator(task: str) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    if task == "cxr":
        from medge.calibration.synthetic.cxr import generate_cxr

        return generate_cxr
    if task == "us-frame":
        from medge.calibration.synthetic.ultrasound import generate_us_frames

        return generate_us_frames
    if task == "us-seg":
        from medge.calibration.synthetic.ultrasound import generate_us_segmentation

        return generate_us_segmentation
    from medge.calibration.synthetic.ecg import generate_ecg

    return generate_ecg


def generate(task: str, n: int, seed: int = 0, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` samples of synthetic `task` data deterministically from `seed`.

    Returns ``(inputs, targets)`` as described in the module docstring.  Extra keyword arguments
    go to the task's generator (e.g. ``prevalence`` for ``cxr``, ``lesion_prob`` for ultrasound).
    The same (task, n, seed, kw) always gives the same arrays.
    """
    if task not in TASKS:
        raise DataError(f"unknown synthetic task '{task}';{did_you_mean(task, TASKS)} choices: {', '.join(TASKS)}")
    if int(n) < 0:
        raise DataError(f"synthetic sample count must be >= 0, got {n}")
    n = int(n)
    make = _generator(task)
    root = np.random.SeedSequence([int(seed), TASKS.index(task)])
    inputs, targets = [], []
    # one child seed per chunk of CHUNK samples
    chunk_seeds = root.spawn((n + CHUNK - 1) // CHUNK)
    for start, child in zip(range(0, n, CHUNK), chunk_seeds):
        x, y = make(min(CHUNK, n - start), np.random.default_rng(child), **kw)
        inputs.append(x)
        targets.append(y)
    if not inputs:  # n == 0: empty arrays with the task's shapes and dtypes
        x, y = make(1, np.random.default_rng(root), **kw)
        return x[:0], y[:0]
    return np.concatenate(inputs), np.concatenate(targets)
