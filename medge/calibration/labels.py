"""Label names ↔ targets, following the model's task and label list.

Folder and CSV sources give label *names* (a class subfolder, a CSV row); arrays and synthetic
sources give target *arrays*.  Both are turned into the same targets (multi-hot for multi-label
classifiers, 0/1 or a class index for classifiers) and the same class names for stratified
sampling and the report's per-class counts.
"""

from __future__ import annotations

import re

import numpy as np

from medge.common.errors import DataError
from medge.common.metadata import ModelMeta

NEGATIVE_NAMES = frozenset({"none", "normal", "negative", "nofinding", "no", "0", "healthy", "absent", "false"})
POSITIVE_NAMES = frozenset({"positive", "1", "present", "yes", "abnormal", "true"})
NONE_CLASS = "(none)"


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(name).strip().lower())


def labels_usable(meta: ModelMeta | None) -> bool:
    """Whether label names can be turned into targets for this model."""
    return bool(meta and meta.labels and meta.task in ("multilabel-classification", "classification"))


def _binary(meta: ModelMeta) -> bool:
    return meta.task == "classification" and len(meta.labels) == 1


def name_is_known(name: str, meta: ModelMeta) -> bool:
    """Whether `name` is one of the model's labels or a negative/positive word."""
    key = _norm(name)
    known = {_norm(label) for label in meta.labels} | NEGATIVE_NAMES
    if _binary(meta):
        known |= POSITIVE_NAMES
    return key in known


def encode_names(names: list[str], meta: ModelMeta, *, where: str) -> np.ndarray:
    """Turn label names into the model's target.

    Multi-label: a multi-hot float32 vector over ``meta.labels`` (negative words give all zeros).
    Binary classifier (one label): 1.0 for the label or a positive word, 0.0 for a negative word.
    Multi-class: the class index (int64 scalar).
    """
    names = [n for n in (str(x).strip() for x in names) if n]
    index = {_norm(label): i for i, label in enumerate(meta.labels)}
    choices = ", ".join(meta.labels)
    if meta.task == "multilabel-classification":
        target = np.zeros(len(meta.labels), dtype=np.float32)
        for name in names:
            key = _norm(name)
            if key in index:
                target[index[key]] = 1.0
            elif key not in NEGATIVE_NAMES:
                raise DataError(f"unknown label '{name}' in {where}; the model's labels are: {choices} (or 'none')")
        return target
    if len(names) != 1:
        raise DataError(f"{where} gives {len(names)} labels {names}; a single-label classifier needs exactly one")
    key = _norm(names[0])
    if _binary(meta):
        if key in index or key in POSITIVE_NAMES:
            return np.asarray(1.0, dtype=np.float32)
        if key in NEGATIVE_NAMES:
            return np.asarray(0.0, dtype=np.float32)
        raise DataError(f"unknown label '{names[0]}' in {where}; use '{meta.labels[0]}'/positive or negative/normal")
    if key in index:
        return np.asarray(index[key], dtype=np.int64)
    if key.isdigit() and int(key) < len(meta.labels):
        return np.asarray(int(key), dtype=np.int64)
    raise DataError(f"unknown label '{names[0]}' in {where}; the model's labels are: {choices}")


def class_names(target: np.ndarray | None, meta: ModelMeta | None) -> tuple[str, ...] | None:
    """The class names a target stands for (used for stratification and per-class counts).

    Multi-hot → the positive label names (or ``(none)``); a scalar → ``positive``/``negative``
    for a binary classifier, the label name for a multi-class one; a mask → ``foreground`` or
    ``empty``.  None when the target has no classes (signals, no target).
    """
    if target is None:
        return None
    arr = np.asarray(target)
    task = meta.task if meta else ""
    labels = list(meta.labels) if meta else []
    if task == "ecg-reconstruction":
        return None
    if task == "segmentation" or arr.ndim >= 2:
        return ("foreground",) if np.any(arr > 0.5) else ("empty",)
    if arr.ndim == 1 and arr.size > 1:
        names = [labels[i] if i < len(labels) else str(i) for i in np.flatnonzero(arr > 0.5)]
        return tuple(names) if names else (NONE_CLASS,)
    value = float(arr.reshape(-1)[0]) if arr.size else 0.0
    if len(labels) <= 1:
        return ("positive",) if value > 0.5 else ("negative",)
    idx = int(round(value))
    return (labels[idx] if 0 <= idx < len(labels) else str(idx),)


def stratum_of(names: tuple[str, ...] | None) -> str | None:
    """One stratification key for a set of class names (the label combination)."""
    return None if names is None else "+".join(sorted(names))
