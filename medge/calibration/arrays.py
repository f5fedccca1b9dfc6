"""NPY/NPZ arrays of raw inputs (and optional targets).

``.npy`` holds inputs only.  ``.npz`` holds inputs under ``inputs`` or ``x`` and optional targets
under ``targets``, ``y``, ``labels`` or ``masks``.  Inputs are *raw* (before the model's
preprocessing), like the synthetic generators' output: images as (n, H, W), (n, C, H, W) or
(n, H, W, C); signals as (n, leads, samples) in mV at the model's rate.  An NPZ with
``preprocessed=True`` (or a model without medge metadata) holds model-ready inputs that are used
as they are, after a shape check.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medge.calibration.labels import class_names, stratum_of
from medge.calibration.preprocess import image_to_model, raw_to_unit, signal_to_model
from medge.calibration.sampling import Candidate, error_detail
from medge.common.errors import DataError
from medge.common.metadata import ModelMeta

INPUT_KEYS = ("inputs", "x")
TARGET_KEYS = ("targets", "y", "labels", "masks")


def load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(inputs, targets or None, preprocessed flag) from an .npy or .npz file."""
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), None, False
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.keys())
            in_key = next((k for k in INPUT_KEYS if k in npz), None)
            if in_key is None:
                raise DataError(f"{path.name} has arrays {keys} but none called {' or '.join(INPUT_KEYS)}; "
                                "save the inputs as np.savez(path, inputs=x, targets=y)")
            tg_key = next((k for k in TARGET_KEYS if k in npz), None)
            inputs = npz[in_key]
            targets = npz[tg_key] if tg_key else None
            preprocessed = bool(npz["preprocessed"]) if "preprocessed" in npz else False
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path.name} ({error_detail(exc, path)}); "
                        "save arrays with numpy.save/numpy.savez (no pickled objects)") from exc
    if targets is not None and len(targets) != len(inputs):
        raise DataError(f"{path.name} has {len(inputs)} inputs but {len(targets)} targets; they must match one to one")
    return inputs, targets, preprocessed


def _image_rows(inputs: np.ndarray, pre: dict[str, Any], name: str) -> np.ndarray:
    """View the inputs as (n, H, W) or (n, H, W, C)."""
    channels_like = (1, 3, 4)
    if inputs.ndim == 2:
        return inputs[None]
    if inputs.ndim == 3:
        return inputs
    if inputs.ndim == 4:
        if inputs.shape[-1] in channels_like:
            return inputs
        if inputs.shape[1] in channels_like:
            return np.moveaxis(inputs, 1, -1)
    raise DataError(f"{name} inputs have shape {inputs.shape}; expected images as (n, H, W), (n, C, H, W) "
                    f"or (n, H, W, C) for a {pre.get('height')}x{pre.get('width')} model")


def array_candidates(path: Path, meta: ModelMeta | None, pre: dict[str, Any] | None, input_shape: tuple[int, ...],
                     *, kind: str | None) -> tuple[list[Candidate], str | None]:
    """One candidate per array row; returns ``(candidates, labels_from)``."""
    inputs, targets, preprocessed = load_arrays(path)
    name = path.name
    if preprocessed or meta is None or pre is None:
        want = tuple(input_shape[1:])
        rows = inputs if tuple(inputs.shape[1:]) == want else None
        if rows is None and tuple(inputs.shape) == want:
            rows = inputs[None]
        if rows is None:
            raise DataError(f"{name} inputs have shape {inputs.shape}; model-ready inputs must be (n, "
                            f"{', '.join(map(str, want))})")
        convert = lambda row: np.ascontiguousarray(row, dtype=np.float32)  # noqa: E731
    elif kind == "image":
        rows = _image_rows(inputs, pre, name)
        convert = lambda row: image_to_model(raw_to_unit(row, pre), pre)  # noqa: E731
    else:
        rows = inputs[None] if inputs.ndim == 2 else inputs
        if rows.ndim != 3:
            raise DataError(f"{name} inputs have shape {inputs.shape}; expected signals as (n, leads, samples)")
        convert = lambda row: signal_to_model(row, pre)  # noqa: E731

    def loader(i: int):
        return lambda: (convert(np.asarray(rows[i])), None)

    candidates = []
    for i in range(len(rows)):
        target = None if targets is None else np.asarray(targets[i])
        candidates.append(Candidate(f"{name}[{i}]", loader(i), target, stratum_of(class_names(target, meta))))
    return candidates, ("arrays" if targets is not None else None)
