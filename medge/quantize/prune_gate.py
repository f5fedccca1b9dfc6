"""The clinical gate on a pruned model: task metric of the student vs its dense FP32 teacher.

Same rule as the quantization gate (``medge.quantize.gate``): the point drop of the task metric
on the evaluation set must be at most ``max_drop``; the paired-bootstrap 95 % CI of the drop is
reported with it.  When the evaluation data carry no labels, the dense teacher labels them
(probabilities thresholded at 0.5 for classifiers and segmenters, its signals for ECG); a model
with an unknown task, or whose outputs the data's targets do not fit (an encoder's embedding), is
gated on *fidelity*, the R² of the student's outputs against the teacher's (1.0 for the teacher itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medge.errors import DataError

FIDELITY = "fidelity"
DEFAULT_MAX_DROP = {"auroc": 0.005, "sens@spec": 0.02, "dice": 0.01, "iou": 0.01, "pearson": 0.005,
                    "accuracy": 0.01, FIDELITY: 0.01}


@dataclass
class GateResult:
    """One gate decision (stable JSON)."""

    name: str
    reference: float
    pruned: float
    drop: float
    ci95: list[float]
    max_drop: float | None
    passed: bool | None
    samples: int
    labels_from: str  # "data" or "teacher"


def metric_for(task: str, metric: str | None) -> str:
    """The gate metric: `metric`, else the task's default, else fidelity for an unknown task."""
    if metric:
        return metric
    from medge.quantize.metrics import default_metric_for_task

    return default_metric_for_task(task) if task != "unknown" else FIDELITY


def teacher_targets(task: str, metric: str, teacher_out: np.ndarray) -> np.ndarray:
    """Targets made by the dense teacher for unlabelled data."""
    if metric == FIDELITY or task == "ecg-reconstruction":
        return teacher_out.astype(np.float32)
    return (teacher_out >= 0.5).astype(np.float32)


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> float:
    """R² of `outputs` against `reference` (1 is identical, 0 is no better than the mean)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    total = float(((ref - ref.mean(axis=0)) ** 2).sum())
    if total <= 0:
        raise DataError("the teacher's outputs are constant on the evaluation data, so fidelity is undefined; "
                        "give more varied data or --task/--labels with labelled --eval data")
    return 1.0 - float(((out - ref) ** 2).sum()) / total


def score(metric: str, outputs: np.ndarray, targets: np.ndarray) -> float:
    """Metric `metric` of `outputs` against `targets` (fidelity: targets are the teacher's outputs)."""
    if metric == FIDELITY:
        return fidelity(outputs, targets)
    from medge.quantize.metrics import task_metric

    return float(task_metric(metric, outputs, targets))


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better."""
    from medge.quantize.metrics import LOWER_IS_BETTER

    return metric.split("@")[0] not in LOWER_IS_BETTER


def _fidelity_ci(teacher: np.ndarray, student: np.ndarray, n_boot: int = 500, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    drops = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(teacher), size=len(teacher))
        try:
            drops.append(1.0 - fidelity(student[idx], teacher[idx]))
        except DataError:
            continue
    if not drops:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(drops, [2.5, 97.5])
    return [float(lo), float(hi)]


def drop(metric: str, reference: float, value: float) -> float:
    """Signed drop of `value` from `reference`, positive when worse (fidelity: higher is better)."""
    if metric == FIDELITY:
        return reference - value
    from medge.quantize.metrics import metric_drop

    return metric_drop(metric, reference, value)


def gate(metric: str, teacher_out: np.ndarray, student_out: np.ndarray, targets: np.ndarray,
         max_drop: float | None, labels_from: str) -> GateResult:
    """Score teacher and student on the same samples and decide (``passed`` None without `max_drop`)."""
    from medge.quantize.metrics import bootstrap_drop_ci

    reference = score(metric, teacher_out, targets)
    pruned = score(metric, student_out, targets)
    lost = drop(metric, reference, pruned)
    if metric == FIDELITY:
        ci = _fidelity_ci(teacher_out, student_out)
    else:
        ci = list(bootstrap_drop_ci(teacher_out, student_out, targets, metric, n_boot=500))
    passed = None if max_drop is None else bool(lost <= max_drop)
    return GateResult(metric, round(reference, 6), round(pruned, 6), round(lost, 6),
                      [round(c, 6) for c in ci], max_drop, passed, len(targets), labels_from)
