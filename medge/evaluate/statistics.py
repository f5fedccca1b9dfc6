"""Statistics shared by every gate, profiler and app: the bootstrap CI and the latency summary.

* `bootstrap_ci`: a percentile bootstrap through `scipy.stats.bootstrap`.  The resampled unit is the
  sample *index*, so every array a statistic looks at (reference outputs, candidate outputs,
  targets) is resampled with the same indices: the bootstrap is paired by construction.  Resamples
  on which the statistic is undefined (NaN, e.g. no positive drawn for an AUROC) are left out.
* `latency_summary`: one key set for every latency report: ``p50 p90 p95 p99 max mean count`` (ms).
* The precision rule of every gate (`NOISE_FRACTION`, `precise_enough`, `samples_for_precision`): a
  drop is told from noise when its CI half-width is at most a third of the budget; the half-width of
  a paired difference shrinks as 1/sqrt(n), which says how many samples reach that.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from medge.common.errors import DataError

CONFIDENCE = 0.95
LATENCY_KEYS = ("p50", "p90", "p95", "p99", "max", "mean", "count")
NOISE_FRACTION = 1.0 / 3.0  # a gate's CI half-width may be at most this share of its budget


def bootstrap_ci(statistic: Callable[[np.ndarray], np.ndarray], n: int, *, n_boot: int = 1000, seed: int = 0,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap CI of a statistic of `n` paired observations (scipy.stats.bootstrap).

    `statistic` takes an index array of shape ``(resamples, n)`` and returns one value per row
    (NaN where the statistic is undefined on that resample; those rows are left out).  Returns
    ``(nan, nan)`` when no resample is defined.
    """
    if n < 1:
        raise DataError("a bootstrap needs at least one sample; give a non-empty evaluation set")
    if n == 1:  # scipy needs two observations; every resample of one is that one
        values = np.asarray(statistic(np.zeros((1, 1), dtype=np.intp)), dtype=np.float64)
    else:
        from scipy import stats  # imported here: scipy.stats costs ~1 s, and the CLI's --help reaches this module

        with warnings.catch_warnings():  # NaN rows make scipy's own interval degenerate; ours skips them
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            result = stats.bootstrap((np.arange(n),), lambda idx, axis=-1: statistic(idx), vectorized=True,
                                     n_resamples=n_boot, method="percentile", confidence_level=confidence,
                                     rng=np.random.default_rng(seed))
        values = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def latency_summary(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """``p50 p90 p95 p99 max mean`` (ms) and ``count`` of latency samples; ``{}`` when there are none."""
    x = np.asarray(samples_ms, dtype=np.float64).ravel()
    if x.size == 0:
        return {}
    p50, p90, p95, p99 = (float(v) for v in np.percentile(x, [50, 90, 95, 99]))
    return {"p50": p50, "p90": p90, "p95": p95, "p99": p99, "max": float(x.max()), "mean": float(x.mean()),
            "count": int(x.size)}


def median_ci(samples: Sequence[float] | np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """Bootstrap 95 % CI of the median of `samples`."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    lo, hi = bootstrap_ci(lambda idx: np.median(x[idx], axis=-1), len(x), n_boot=n_boot, seed=seed)
    return [lo, hi]


def half_width(ci: Sequence[float]) -> float:
    """Half the width of a CI ``(lo, hi)`` (NaN when it is undefined)."""
    lo, hi = float(ci[0]), float(ci[1])
    return (hi - lo) / 2.0 if np.isfinite(lo) and np.isfinite(hi) else float("nan")


def precise_enough(ci: Sequence[float], budget: float) -> bool:
    """Whether the CI is narrow enough to decide against `budget`: half-width <= budget * `NOISE_FRACTION`."""
    width = half_width(ci)
    return bool(np.isfinite(width) and width <= budget * NOISE_FRACTION)


def samples_for_precision(n: int, ci: Sequence[float], budget: float, *, margin: float = 1.15) -> int:
    """Samples expected to bring the CI half-width of a paired mean-like difference measured on `n`
    samples down to ``budget * NOISE_FRACTION`` (the half-width falls as 1/sqrt(n)); at least `n`."""
    width, target = half_width(ci), budget * NOISE_FRACTION
    if not np.isfinite(width) or target <= 0:
        return 2 * n
    return max(n, int(np.ceil(n * (width / target) ** 2 * margin)))
