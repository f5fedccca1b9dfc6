"""The clinical gate on a pruned model: task metric of the student vs its dense FP32 teacher.

The rule is the one `medge.evaluate.gate.Gate` (the drop of the task metric on the evaluation set
must be at most ``max_drop``, reported with its paired-bootstrap 95 % CI).  What is prune-specific
lives here: when the evaluation data carry no labels, the dense teacher labels them (probabilities
thresholded at 0.5 for classifiers and segmenters, its signals for ECG); a model with an unknown
task, or whose outputs the data's targets do not fit (an encoder's embedding), is gated on
*fidelity* (`medge.evaluate.metrics.FIDELITY`), the R² of the student's outputs against the
teacher's (1.0 for the teacher itself).
"""

from __future__ import annotations

import numpy as np

from medge.evaluate.gate import Gate, GateResult
from medge.evaluate.metrics import FIDELITY, default_metric_for_task

PRUNE_BOOTSTRAP = 500  # resamples of the prune gate's CI (it runs once per sparsity probed)


def metric_for(task: str, metric: str | None) -> str:
    """The gate metric: `metric`, else the task's default, else fidelity for an unknown task."""
    if metric:
        return metric
    return default_metric_for_task(task) if task != "unknown" else FIDELITY


def teacher_targets(task: str, metric: str, teacher_out: np.ndarray) -> np.ndarray:
    """Targets made by the dense teacher for unlabelled data."""
    if metric == FIDELITY or task == "ecg-reconstruction":
        return teacher_out.astype(np.float32)
    return (teacher_out >= 0.5).astype(np.float32)


def gate(metric: str, teacher_out: np.ndarray, student_out: np.ndarray, targets: np.ndarray,
         max_drop: float | None, labels_from: str, *, ci_rule: bool = False) -> GateResult:
    """Score teacher and student on the same samples and decide (``passed`` None without `max_drop`;
    `ci_rule`: the whole CI must be within the budget, see `medge.evaluate.gate`); figures rounded to
    6 decimals (the report's JSON form: ``GateResult.to_dict("pruned")``)."""
    rule = Gate(metric, max_drop, n_boot=PRUNE_BOOTSTRAP, ci_rule=ci_rule)
    return rule.check(teacher_out, student_out, targets, labels_from=labels_from).rounded(6)
