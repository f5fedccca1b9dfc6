"""Clinical metrics for every gate and app: AUROC, sensitivity at specificity, Dice/IoU, ECG errors, fidelity.

Conventions (all functions take numpy arrays, the first axis is the sample):

* classifiers: ``outputs`` are probabilities ``(n,)``, ``(n, 1)`` or ``(n, labels)``; ``targets``
  are 0/1 with the same number of elements per sample.  Multi-label metrics are macro averages
  over the labels that have both classes (a label without positives or negatives is skipped).
* segmenters: ``outputs`` are probabilities, ``targets`` 0/1 masks; both are flattened per
  sample, thresholded at 0.5, scored per sample and averaged (empty-empty scores 1).
* ECG reconstruction: ``outputs`` and ``targets`` are ``(n, leads, samples)`` in mV; Pearson r is
  computed per sample and lead and averaged over samples; RMSE and MAE are reported in µV.
  One NaN rule for the gate and the ECG app alike: every ECG metric is computed over the time
  points where both signals are finite (a gap is left out, never filled); a lead with fewer than
  two such points, or a flat one, has Pearson r NaN, and averages skip NaN leads.
* fidelity (``FIDELITY``, not a user ``--metric``): R² of outputs against a reference model's
  outputs given as the targets (the pruning gate on data without labels).

`task_metric` names: ``auroc``, ``sens@spec`` (specificity 0.9; ``sens@spec:0.95`` picks
another), ``dice``, ``iou``, ``pearson``, ``rmse_uv``, ``mae_uv``, ``accuracy``.  A "drop" is
always signed so that positive means the candidate (quantized, pruned) model is worse (reference −
candidate for higher-is-better metrics, candidate − reference for errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from medge.common.errors import DataError, UnknownNameError, did_you_mean

DEFAULT_SPECIFICITY = 0.9
FIDELITY = "fidelity"
METRIC_NAMES = ("auroc", "sens@spec", "dice", "iou", "pearson", "rmse_uv", "mae_uv", "accuracy")
LOWER_IS_BETTER = frozenset({"rmse_uv", "mae_uv"})
_TASK_DEFAULTS = {
    "multilabel-classification": "auroc",
    "classification": "auroc",
    "segmentation": "dice",
    "ecg-reconstruction": "pearson",
}


# --------------------------------------------------------------------------- shapes
def targets_fit(output_shape: tuple[int, ...], target_shape: tuple[int, ...]) -> bool:
    """Whether per-sample targets of `target_shape` score outputs of `output_shape` (singleton axes
    ignored): as many values is not enough, (64, 8, 8) embeddings are not (64, 64) masks."""
    return tuple(d for d in output_shape if d != 1) == tuple(d for d in target_shape if d != 1)


def _as_2d(outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten both arrays to ``(n, k)`` with matching shapes, or raise `DataError`."""
    out = np.asarray(outputs, dtype=np.float64)
    tgt = np.asarray(targets, dtype=np.float64)
    if out.ndim == 0 or tgt.ndim == 0 or out.shape[0] != tgt.shape[0]:
        raise DataError(
            f"outputs {out.shape} and targets {tgt.shape} do not have the same number of samples; "
            "give one target per evaluated input"
        )
    n = out.shape[0]
    if not targets_fit(out.shape[1:], tgt.shape[1:]):
        raise DataError(
            f"outputs of shape {out.shape[1:]} per sample do not fit targets of shape {tgt.shape[1:]}; "
            "the evaluation targets do not fit this model's outputs"
        )
    return out.reshape(n, -1), tgt.reshape(n, -1)


# --------------------------------------------------------------------------- classification
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, ties receiving the average of their ranks."""
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    group_rank = first + (counts + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, counts)
    return ranks


def _binary_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann–Whitney AUROC of one label; NaN when only one class is present."""
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc_per_label(outputs: np.ndarray, targets: np.ndarray) -> list[float]:
    """AUROC of every label (NaN for a label with only one class present)."""
    out, tgt = _as_2d(outputs, targets)
    return [_binary_auroc(out[:, j], tgt[:, j]) for j in range(out.shape[1])]


def _macro(values: list[float], what: str) -> float:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        raise DataError(f"{what} is undefined: no label has both positive and negative samples; "
                        "use an evaluation set that contains both classes")
    return float(np.mean(finite))


def auroc(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Macro AUROC over the labels that have both classes (Mann–Whitney, ties count half)."""
    return _macro(auroc_per_label(outputs, targets), "AUROC")


def _binary_sens_at_spec(scores: np.ndarray, labels: np.ndarray, specificity: float) -> float:
    positive = labels > 0.5
    negatives = np.sort(scores[~positive])
    if positive.sum() == 0 or len(negatives) == 0:
        return math.nan
    # Threshold on the negatives: the k-th smallest negative score with k = ceil(spec * n_neg),
    # so at least `specificity` of the negatives score <= threshold; positive means score > it.
    k = max(1, math.ceil(specificity * len(negatives) - 1e-12))
    threshold = negatives[k - 1]
    return float(np.mean(scores[positive] > threshold))


def sensitivity_at_specificity(outputs: np.ndarray, targets: np.ndarray,
                               specificity: float = DEFAULT_SPECIFICITY) -> float:
    """Macro sensitivity at a threshold that keeps at least `specificity` of negatives negative."""
    if not 0.0 < specificity <= 1.0:
        raise DataError(f"specificity must be in (0, 1], got {specificity}")
    out, tgt = _as_2d(outputs, targets)
    values = [_binary_sens_at_spec(out[:, j], tgt[:, j], specificity) for j in range(out.shape[1])]
    return _macro(values, "sensitivity at specificity")


def accuracy(outputs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """Accuracy: argmax when targets are class indices, else thresholded probabilities vs 0/1."""
    out = np.asarray(outputs, dtype=np.float64)
    tgt = np.asarray(targets)
    if out.ndim == 2 and out.shape[1] > 1 and tgt.ndim == 1 and len(tgt) == len(out):
        return float(np.mean(np.argmax(out, axis=1) == tgt))
    out2, tgt2 = _as_2d(out, tgt)
    return float(np.mean((out2 > threshold) == (tgt2 > 0.5)))


# --------------------------------------------------------------------------- segmentation
def _overlap_per_sample(outputs: np.ndarray, targets: np.ndarray, threshold: float) -> tuple:
    out, tgt = _as_2d(outputs, targets)
    pred, true = out > threshold, tgt > 0.5
    inter = np.logical_and(pred, true).sum(axis=1).astype(np.float64)
    return inter, pred.sum(axis=1).astype(np.float64), true.sum(axis=1).astype(np.float64)


def dice_per_sample(outputs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Dice of every sample (1 when both prediction and target are empty)."""
    inter, p, t = _overlap_per_sample(outputs, targets, threshold)
    denom = p + t
    return np.where(denom == 0, 1.0, 2.0 * inter / np.maximum(denom, 1.0))


def iou_per_sample(outputs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """IoU (Jaccard) of every sample (1 when both prediction and target are empty)."""
    inter, p, t = _overlap_per_sample(outputs, targets, threshold)
    union = p + t - inter
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1.0))


def dice(outputs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """Mean per-sample Dice of probabilities thresholded at `threshold` against 0/1 masks."""
    return float(np.mean(dice_per_sample(outputs, targets, threshold)))


def iou(outputs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """Mean per-sample IoU of probabilities thresholded at `threshold` against 0/1 masks."""
    return float(np.mean(iou_per_sample(outputs, targets, threshold)))


# --------------------------------------------------------------------------- ECG reconstruction
def _as_leads(outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.asarray(outputs, dtype=np.float64)
    tgt = np.asarray(targets, dtype=np.float64)
    if out.shape != tgt.shape or out.ndim not in (2, 3):
        raise DataError(f"ECG outputs {out.shape} and targets {tgt.shape} must both be "
                        "(n, leads, samples) or (leads, samples) with the same shape")
    return (out[None], tgt[None]) if out.ndim == 2 else (out, tgt)


def _finite_pairs(out: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one NaN rule: (mask of time points where both are finite, out and tgt zeroed elsewhere)."""
    ok = np.isfinite(out) & np.isfinite(tgt)
    return ok, np.where(ok, out, 0.0), np.where(ok, tgt, 0.0)


def pearson_per_sample_lead(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pearson r of every (sample, lead) pair over its finite time points, shape ``(n, leads)``;
    NaN for a flat lead or one with fewer than two finite points."""
    ok, out, tgt = _finite_pairs(*_as_leads(outputs, targets))
    count = ok.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(ok, out - out.sum(axis=-1, keepdims=True) / count, 0.0)
        b = np.where(ok, tgt - tgt.sum(axis=-1, keepdims=True) / count, 0.0)
        denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
        valid = (denom > 0) & (count[..., 0] >= 2)
        return np.where(valid, (a * b).sum(axis=-1) / np.where(valid, denom, 1.0), np.nan)


def pearson_per_lead(outputs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per-lead Pearson r averaged over samples (flat signals skipped)."""
    r = pearson_per_sample_lead(outputs, targets)
    return [float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in r.T]


def pearson(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean Pearson r over leads (the ECG gate metric)."""
    return _macro(pearson_per_lead(outputs, targets), "Pearson r")


def _error_uv(outputs: np.ndarray, targets: np.ndarray, power: int, axis: tuple[int, ...] | None) -> np.ndarray:
    """Mean |error|^power over the finite time points (NaN where there are none), in µV^power."""
    ok, out, tgt = _finite_pairs(*_as_leads(outputs, targets))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.abs(out - tgt) ** power).sum(axis=axis) / ok.sum(axis=axis) * 1000.0 ** power


def rmse_uv(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Root-mean-square error in µV of signals given in mV (finite time points only)."""
    return float(np.sqrt(_error_uv(outputs, targets, 2, None)))


def mae_uv(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error in µV of signals given in mV (finite time points only)."""
    return float(_error_uv(outputs, targets, 1, None))


def ecg_per_lead(pred_mv: np.ndarray, ref_mv: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per-lead ``pearson_r``, ``rmse_uv`` and ``mae_uv`` of one ``(leads, samples)`` record in mV,
    under the module's one NaN rule (gaps left out; NaN for a flat or empty lead)."""
    r = pearson_per_sample_lead(pred_mv, ref_mv)[0]
    rmse = np.sqrt(_error_uv(pred_mv, ref_mv, 2, (0, 2)))
    mae = _error_uv(pred_mv, ref_mv, 1, (0, 2))
    if len(names) != len(r):
        raise DataError(f"{len(names)} lead names for {len(r)} leads; give one name per lead")
    return {name: {"pearson_r": float(r[k]), "rmse_uv": float(rmse[k]), "mae_uv": float(mae[k])}
            for k, name in enumerate(names)}


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> float:
    """R² of `outputs` against `reference` (1 is identical, 0 is no better than the mean)."""
    ref = np.asarray(reference).reshape(len(reference), -1).astype(np.float64)
    out = np.asarray(outputs).reshape(len(outputs), -1).astype(np.float64)
    total = float(((ref - ref.mean(axis=0)) ** 2).sum())
    if total <= 0:
        raise DataError("the teacher's outputs are constant on the evaluation data, so fidelity is undefined; "
                        "give more varied data or --task/--labels with labelled --eval data")
    return 1.0 - float(((out - ref) ** 2).sum()) / total


# --------------------------------------------------------------------------- dispatch
def _parse_name(name: str) -> tuple[str, dict]:
    base, _, arg = name.partition(":")
    if base not in METRIC_NAMES:
        raise UnknownNameError(f"unknown metric '{name}';{did_you_mean(base, METRIC_NAMES)} "
                               f"choices: {', '.join(METRIC_NAMES)}")
    if not arg:
        return base, {}
    if base != "sens@spec":
        raise UnknownNameError(f"metric '{base}' takes no argument; use '{base}'")
    try:
        return base, {"specificity": float(arg)}
    except ValueError:
        raise UnknownNameError(f"bad specificity in '{name}'; use e.g. 'sens@spec:0.95'") from None


_FUNCTIONS: dict[str, Callable[..., float]] = {
    "auroc": auroc,
    "sens@spec": sensitivity_at_specificity,
    "dice": dice,
    "iou": iou,
    "pearson": pearson,
    "rmse_uv": rmse_uv,
    "mae_uv": mae_uv,
    "accuracy": accuracy,
}


def check_metric_name(name: str) -> str:
    """Validate a metric name (raises `UnknownNameError`) and return it."""
    _parse_name(name)
    return name


def task_metric(name: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    """Compute metric `name` (see module docstring) of `outputs` against `targets` (for
    ``fidelity`` the targets are the reference model's outputs)."""
    if name == FIDELITY:
        return fidelity(outputs, targets)
    base, kwargs = _parse_name(name)
    return _FUNCTIONS[base](outputs, targets, **kwargs)


def default_metric_for_task(task: str) -> str:
    """The gate metric for a model task: auroc, dice or pearson."""
    try:
        return _TASK_DEFAULTS[task]
    except KeyError:
        raise UnknownNameError(
            f"no default metric for task '{task}'; pass --metric ({', '.join(METRIC_NAMES)})"
        ) from None


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` is better (fidelity included)."""
    return name == FIDELITY or _parse_name(name)[0] not in LOWER_IS_BETTER


def metric_drop(name: str, reference: float, candidate: float) -> float:
    """Signed drop, positive when the candidate (quantized, pruned) model is worse."""
    return reference - candidate if higher_is_better(name) else candidate - reference


def per_sample_scores(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """For metrics that are means of per-sample scores, the per-sample function (None otherwise)."""
    if name == FIDELITY:
        return None
    base, _ = _parse_name(name)
    if base == "dice":
        return dice_per_sample
    if base == "iou":
        return iou_per_sample
    if base == "pearson":
        return lambda o, t: np.nanmean(pearson_per_sample_lead(o, t), axis=1)
    return None
