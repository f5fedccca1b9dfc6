"""Parity: how far a candidate's outputs are from a reference's, measured one way everywhere.

`compare_outputs` is the one comparison of two outputs (max/mean absolute error, relative error
``|candidate − reference| / (|reference| + rel_floor)``, cosine, NaN placement, optional
``atol + rtol·|reference|`` tolerance); `cosine` is the one cosine similarity, with one rule for a
zero norm: two all-zero outputs agree (1.0), an all-zero output against a non-zero one does not (0.0).
Used by the export parity (PyTorch vs ONNX), `medge compare` and the per-recipe INT8 parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medge.common.errors import DataError


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened outputs (1.0 for two zero outputs, 0.0 for one)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


@dataclass
class OutputDiff:
    """The differences between one reference output and one candidate output."""

    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    #: every element within ``atol + rtol·|reference|`` (NaN where the reference is NaN); None without a tolerance
    within_tolerance: bool | None = None


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, *, rel_floor: float = 1e-6,
                    atol: float | None = None, rtol: float = 0.0, label: str = "the candidate") -> OutputDiff:
    """Compare `candidate` with `reference` (same shape, else `DataError` naming `label`).

    NaN in the same places counts as equal; NaN in different places is an infinite error.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise DataError(f"{label}: output of shape {list(got.shape)} does not match the reference {list(ref.shape)}; "
                        "compare the same model")
    if (np.isnan(ref) != np.isnan(got)).any():
        return OutputDiff(float("inf"), float("inf"), float("inf"), float("nan"), False if atol is not None else None)
    diff = np.abs(np.nan_to_num(got - ref, nan=0.0))
    rel = diff / (np.abs(np.nan_to_num(ref)) + rel_floor)
    within = None
    if atol is not None:
        within = bool(np.isclose(got, ref, atol=atol, rtol=rtol, equal_nan=True).all())
    return OutputDiff(float(diff.max(initial=0.0)), float(diff.mean()) if diff.size else 0.0,
                      float(rel.max(initial=0.0)), cosine(np.nan_to_num(ref), np.nan_to_num(got)), within)


def compare_output_lists(reference: list[np.ndarray], candidate: list[np.ndarray], label: str) -> OutputDiff:
    """`compare_outputs` over all outputs of a model at once (they are flattened and joined)."""
    if len(reference) != len(candidate):
        raise DataError(f"{label} has {len(candidate)} outputs, the reference has {len(reference)}; "
                        "compare the same model")
    for i, (r, g) in enumerate(zip(reference, candidate)):
        if np.shape(r) != np.shape(g):
            raise DataError(f"{label}: output {i} has shape {list(np.shape(g))}, the reference has {list(np.shape(r))}")
    return compare_outputs(_joined(reference), _joined(candidate), label=label)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=np.float64).ravel() for x in arrays])
