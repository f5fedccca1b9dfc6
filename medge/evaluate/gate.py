"""The one clinical gate: a candidate model (quantized, pruned, compiled) against its reference.

`Gate(metric, max_drop).check(reference_outputs, candidate_outputs, targets)` scores both models
on the same samples with the task metric (`medge.evaluate.metrics`), takes the signed drop
(positive is worse), its paired-bootstrap 95 % CI (`medge.evaluate.statistics.bootstrap_ci`) and
the verdict ``drop <= max_drop`` (None without a budget), and returns one `GateResult`.  The INT8
gate (`medge.quantize.gate`), the prune gate (`medge.prune.gate`) and the per-recipe
metric gate (`medge.quantize.parity_gate`) all use it; `DEFAULT_MAX_DROP` is the one budget table.

Deciding on signal, not noise (``Gate(..., ci_rule=True)``, the rule of ``--prune auto``): the
candidate passes only when the whole CI of the drop is within the budget, fails with "drops by"
when the whole CI is above it, and fails "within noise" when the CI straddles it.  Every result
says whether its CI is precise enough to decide (`GateResult.precise`: half-width at most
`medge.evaluate.statistics.NOISE_FRACTION` of the budget); callers with unlimited data draw more
samples until it is (`medge.evaluate.statistics.samples_for_precision`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medge.common.errors import DataError
from medge.evaluate.metrics import FIDELITY, metric_drop, per_sample_scores, task_metric
from medge.evaluate.statistics import bootstrap_ci, half_width, precise_enough

# Largest allowed drop when the user gives none (the clinical targets; fidelity is R² for unlabelled data).
DEFAULT_MAX_DROP: dict[str, float] = {"auroc": 0.005, "sens@spec": 0.02, "dice": 0.01, "iou": 0.01,
                                      "pearson": 0.005, "accuracy": 0.01, FIDELITY: 0.01}


@dataclass
class GateResult:
    """One gate decision: reference and candidate value of `metric`, the drop, its CI and the verdict."""

    metric: str
    reference: float
    value: float
    drop: float
    ci95: list[float]
    max_drop: float | None
    passed: bool | None  # None: no budget, informative only
    n: int  # evaluated samples
    labels_from: str = "data"  # "data", or "teacher" when the reference model labelled the data
    within_noise: bool = False  # failed because the CI straddles the budget (Gate.ci_rule)

    @property
    def ci_half_width(self) -> float:
        """Half the width of the drop's CI."""
        return half_width(self.ci95)

    @property
    def precise(self) -> bool | None:
        """Whether the CI is narrow enough to decide (half-width <= budget / 3); None without a budget."""
        return None if self.max_drop is None else precise_enough(self.ci95, self.max_drop)

    @property
    def verdict(self) -> str:
        """``passed``, ``within noise``, ``failed``, or ``informative`` (no budget)."""
        if self.passed is None:
            return "informative"
        return "passed" if self.passed else ("within noise" if self.within_noise else "failed")

    def describe(self) -> str:
        """One phrase: ``auroc drop 0.0012 [95% CI -0.0003, 0.0027] on 2000 samples``."""
        lo, hi = self.ci95
        return f"{self.metric} drop {self.drop:.4g} [95% CI {lo:.4g}, {hi:.4g}] on {self.n} samples"

    def precision_note(self, more_data: str = "--eval set") -> str | None:
        """None when the CI is precise enough (half-width <= budget / 3) or there is no budget; else a
        sentence: within noise when the CI straddles the budget, on signal when all of it lies on one side
        (only the estimate is loose).  `more_data` names what would narrow it (a flag)."""
        if self.precise is not False:
            return None
        lo, hi = self.ci95
        if lo <= self.max_drop <= hi:
            return (f"the gate's CI is wider than a third of the budget and straddles it ({self.describe()}, budget "
                    f"{self.max_drop:g}): the decision is within noise; give a larger {more_data}")
        side = "below" if hi < self.max_drop else "above"
        return (f"the gate's CI is wider than a third of the budget ({self.describe()}), but all of it lies {side} "
                f"the budget {self.max_drop:g}: the decision is on signal; a larger {more_data} would narrow "
                "the estimate")

    def rounded(self, digits: int) -> GateResult:
        """The same result with its figures rounded to `digits` decimals."""
        return replace(self, reference=round(self.reference, digits), value=round(self.value, digits),
                       drop=round(self.drop, digits), ci95=[round(c, digits) for c in self.ci95])

    def to_dict(self, candidate: str = "quantized") -> dict[str, Any]:
        """Stable JSON: ``name reference <candidate> drop ci95 max_drop passed n_eval labels_from``;
        `candidate` names what was gated (``quantized``, ``pruned``); then ``verdict``,
        ``ci_half_width`` and ``precise`` (CI half-width <= budget / 3)."""
        width = self.ci_half_width
        return {"name": self.metric, "reference": self.reference, candidate: self.value, "drop": self.drop,
                "ci95": list(self.ci95), "max_drop": self.max_drop, "passed": self.passed, "n_eval": self.n,
                "labels_from": self.labels_from, "verdict": self.verdict,
                "ci_half_width": round(width, 6) if np.isfinite(width) else None, "precise": self.precise}


def drop_ci(reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray, metric: str, *,
            n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap CI of the drop of `metric` (sign per `metric_drop`).

    The same resampled sample indices are scored for both models; resamples on which the metric is
    undefined (e.g. no positives drawn) are skipped.
    """
    ref, cand, tgt = np.asarray(reference), np.asarray(candidate), np.asarray(targets)
    n = len(tgt)
    if n == 0 or len(ref) != n or len(cand) != n:
        raise DataError("the gate needs the same non-zero number of reference outputs, candidate outputs and targets")
    per_sample = per_sample_scores(metric)
    if per_sample is not None:  # a mean of per-sample scores: score once, resample the scores
        s_ref, s_cand = per_sample(ref, tgt), per_sample(cand, tgt)

        def statistic(idx: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):
                return np.nanmean(s_ref[idx], axis=-1) - np.nanmean(s_cand[idx], axis=-1)
    else:
        def statistic(idx: np.ndarray) -> np.ndarray:
            return np.array([_resampled_drop(metric, ref[i], cand[i], tgt[i]) for i in idx])
    return bootstrap_ci(statistic, n, n_boot=n_boot, seed=seed)


def _resampled_drop(metric: str, ref: np.ndarray, cand: np.ndarray, tgt: np.ndarray) -> float:
    try:
        return metric_drop(metric, task_metric(metric, ref, tgt), task_metric(metric, cand, tgt))
    except DataError:
        return float("nan")


@dataclass(frozen=True)
class Gate:
    """The rule: the drop of `metric` from the reference to the candidate is at most `max_drop`."""

    metric: str
    max_drop: float | None = None
    n_boot: int = 1000
    seed: int = 0
    ci_rule: bool = False  # pass only when the whole CI is within the budget (see the module docstring)

    def check(self, reference: np.ndarray, candidate: np.ndarray, targets: np.ndarray, *,
              reference_value: float | None = None, labels_from: str = "data") -> GateResult:
        """Score `reference` and `candidate` outputs against `targets` and decide.

        `reference_value` skips re-scoring a reference already scored (the fallback ladder's steps).
        """
        ref_value = task_metric(self.metric, reference, targets) if reference_value is None else reference_value
        value = task_metric(self.metric, candidate, targets)
        lost = metric_drop(self.metric, ref_value, value)
        ci = drop_ci(reference, candidate, targets, self.metric, n_boot=self.n_boot, seed=self.seed)
        passed, noise = None if self.max_drop is None else bool(lost <= self.max_drop), False
        if self.ci_rule and self.max_drop is not None and np.isfinite(ci[0]) and np.isfinite(ci[1]):
            passed = bool(ci[1] <= self.max_drop)
            noise = not passed and bool(ci[0] <= self.max_drop)
        return GateResult(self.metric, float(ref_value), float(value), float(lost), list(ci), self.max_drop,
                          passed, len(targets), labels_from, noise)
