"""Clinical metrics for accuracy gates: AUROC, sensitivity at specificity, Dice/IoU, ECG errors.

Conventions (all functions take numpy arrays, the first axis is the sample):

* classifiers: ``outputs`` are probabilities ``(n,)``, ``(n, 1)`` or ``(n, labels)``; ``targets``
  are 0/1 with the same number of elements per sample.  Multi-label metrics are macro averages
  over the labels that have both classes (a label without positives or negatives is skipped).
* segmenters: ``outputs`` are probabilities, ``targets`` 0/1 masks; both are flattened per
  sample, thresholded at 0.5, scored per sample and averaged (empty-empty scores 1).
* ECG reconstruction: ``outputs`` and ``targets`` are ``(n, leads, samples)`` in mV; Pearson r is
  computed per sample and lead and averaged over samples; RMSE and MAE are reported in µV.

`task_metric` names: ``auroc``, ``sens@spec`` (specificity 0.9; ``sens@spec:0.95`` picks
another), ``dice``, ``iou``, ``pearson``, ``rmse_uv``, ``mae_uv``, ``accuracy``.  A "drop" is
always signed so that positive means the quantized model is worse (reference − quantized for
higher-is-better metrics, quantized − reference for errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from medge.errors import DataError, UnknownNameError, did_you_mean

DEFAULT_SPECIFICITY = 0.9
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


def pearson_per_sample_lead(outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pearson r of every (sample, lead) pair, shape ``(n, leads)``; NaN for a flat signal."""
    out, tgt = _as_leads(outputs, targets)
    a = out - out.mean(axis=-1, keepdims=True)
    b = tgt - tgt.mean(axis=-1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=-1) / np.where(denom > 0, denom, 1.0), np.nan)


def pearson_per_lead(outputs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per-lead Pearson r averaged over samples (flat signals skipped)."""
    r = pearson_per_sample_lead(outputs, targets)
    return [float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in r.T]


def pearson(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean Pearson r over leads (the ECG gate metric)."""
    return _macro(pearson_per_lead(outputs, targets), "Pearson r")


def rmse_uv(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Root-mean-square error in µV of signals given in mV."""
    out, tgt = _as_leads(outputs, targets)
    return float(np.sqrt(np.mean((out - tgt) ** 2)) * 1000.0)


def mae_uv(outputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error in µV of signals given in mV."""
    out, tgt = _as_leads(outputs, targets)
    return float(np.mean(np.abs(out - tgt)) * 1000.0)


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
    """Compute metric `name` (see module docstring) of `outputs` against `targets`."""
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


def metric_drop(name: str, reference: float, quantized: float) -> float:
    """Signed drop, positive when the quantized model is worse."""
    base, _ = _parse_name(name)
    return quantized - reference if base in LOWER_IS_BETTER else reference - quantized


def _per_sample_scores(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """For metrics that are means of per-sample scores, the per-sample function."""
    base, _ = _parse_name(name)
    if base == "dice":
        return dice_per_sample
    if base == "iou":
        return iou_per_sample
    if base == "pearson":
        return lambda o, t: np.nanmean(pearson_per_sample_lead(o, t), axis=1)
    return None


def bootstrap_drop_ci(ref_outputs: np.ndarray, q_outputs: np.ndarray, targets: np.ndarray,
                      metric: str, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap CI of the drop (reference − quantized metric, sign per `metric_drop`).

    The same resampled sample indices are scored for both models.  Resamples on which the metric
    is undefined (e.g. no positives drawn) are skipped.
    """
    ref = np.asarray(ref_outputs)
    q = np.asarray(q_outputs)
    tgt = np.asarray(targets)
    n = len(tgt)
    if n == 0 or len(ref) != n or len(q) != n:
        raise DataError("bootstrap needs the same non-zero number of reference outputs, "
                        "quantized outputs and targets")
    rng = np.random.default_rng(seed)
    per_sample = _per_sample_scores(metric)
    drops: list[float] = []
    if per_sample is not None:
        s_ref, s_q = per_sample(ref, tgt), per_sample(q, tgt)
        idx = rng.integers(0, n, size=(n_boot, n))
        with np.errstate(invalid="ignore"):
            diffs = np.nanmean(s_ref[idx], axis=1) - np.nanmean(s_q[idx], axis=1)
        drops = [float(d) for d in diffs if np.isfinite(d)]
    else:
        for _ in range(n_boot):
            idx = rng.integers(0, n, size=n)
            try:
                m_ref = task_metric(metric, ref[idx], tgt[idx])
                m_q = task_metric(metric, q[idx], tgt[idx])
            except DataError:
                continue
            drops.append(metric_drop(metric, m_ref, m_q))
    if not drops:
        return (math.nan, math.nan)
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return float(lo), float(hi)
