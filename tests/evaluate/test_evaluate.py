"""The evaluation core: one gate, one budget table, one bootstrap, one latency summary, one cosine,
one NaN rule for ECG leads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medge.common.errors import DataError
from medge.evaluate import metrics as M
from medge.evaluate.gate import DEFAULT_MAX_DROP, Gate, GateResult
from medge.evaluate.parity import compare_output_lists, compare_outputs, cosine
from medge.evaluate.statistics import (
    LATENCY_KEYS,
    bootstrap_ci,
    latency_summary,
    median_ci,
    precise_enough,
    samples_for_precision,
)
from medge.prune.gate import gate as prune_gate


def _classifier(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tgt = rng.integers(0, 2, size=(n, 2))
    ref = np.clip(tgt * 0.5 + rng.normal(0.25, 0.25, (n, 2)), 0, 1)
    return ref, np.clip(ref + rng.normal(0, 0.2, (n, 2)), 0, 1), tgt


def test_gate_result_figures_and_stable_json():
    ref, cand, tgt = _classifier()
    res = Gate("auroc", max_drop=0.5, n_boot=200).check(ref, cand, tgt)
    assert res.reference == pytest.approx(M.auroc(ref, tgt)) and res.value == pytest.approx(M.auroc(cand, tgt))
    assert res.drop == pytest.approx(res.reference - res.value) and res.passed is True and res.n == 120
    assert res.ci95[0] <= res.drop <= res.ci95[1]
    assert Gate("auroc", max_drop=res.drop - 1e-9).check(ref, cand, tgt).passed is False
    assert Gate("auroc").check(ref, cand, tgt).passed is None  # no budget: informative only
    assert list(res.to_dict("pruned")) == ["name", "reference", "pruned", "drop", "ci95", "max_drop", "passed",
                                           "n_eval", "labels_from", "verdict", "ci_half_width", "precise"]
    # errors: a drop is positive when the candidate is worse
    ecg = np.random.default_rng(1).normal(size=(6, 3, 40))
    worse = Gate("rmse_uv").check(ecg + 0.01, ecg + 0.1, ecg)
    assert worse.drop > 0 and worse.drop == pytest.approx(worse.value - worse.reference)


def test_gate_ci_is_a_paired_bootstrap_over_sample_indices_skipping_undefined_resamples():
    ref, cand, tgt = _classifier(n=30, seed=4)
    tgt = np.zeros((30, 1))
    tgt[0] = 1  # one positive: most resamples draw none, so their AUROC is undefined
    lo, hi = Gate("auroc", n_boot=300, seed=5).check(ref[:, :1], cand[:, :1], tgt).ci95
    idx = np.random.default_rng(5).integers(0, 30, size=(300, 30))
    drops = []
    for i in idx:
        if tgt[i].sum() in (0, 30):
            continue
        drops.append(M.auroc(ref[i, :1], tgt[i]) - M.auroc(cand[i, :1], tgt[i]))
    assert 0 < len(drops) < 300
    assert [lo, hi] == pytest.approx(list(np.percentile(drops, [2.5, 97.5])), abs=1e-12)


def test_bootstrap_ci_edges():
    assert bootstrap_ci(lambda i: np.full(len(i), np.nan), 10) == pytest.approx((math.nan, math.nan), nan_ok=True)
    assert bootstrap_ci(lambda i: np.full(len(i), 2.0), 1) == (2.0, 2.0)
    with pytest.raises(DataError):
        bootstrap_ci(lambda i: i.sum(axis=-1), 0)


def test_one_budget_table_covers_every_gate_metric():
    # build's table lacked iou and fidelity; the prune gate's had them: one table now
    assert {"auroc", "sens@spec", "dice", "iou", "pearson", "accuracy", M.FIDELITY} <= set(DEFAULT_MAX_DROP)
    import medge.build.chain
    import medge.prune.gate

    assert not hasattr(medge.build.chain, "DEFAULT_MAX_DROP") and not hasattr(medge.prune.gate, "DEFAULT_MAX_DROP")


def test_prune_gate_is_the_one_gate_on_fidelity():
    rng = np.random.default_rng(2)
    teacher = rng.normal(size=(40, 5)).astype(np.float32)
    student = teacher + rng.normal(0, 0.1, teacher.shape).astype(np.float32)
    res = prune_gate(M.FIDELITY, teacher, student, teacher, 0.05, "teacher")
    assert isinstance(res, GateResult) and res.reference == 1.0 and res.labels_from == "teacher"
    assert res.drop == pytest.approx(1.0 - M.fidelity(student, teacher), abs=1e-6) and res.passed is True
    assert res.ci95[0] <= res.drop <= res.ci95[1] and res.n == 40


def test_ecg_one_nan_rule_for_gate_and_app():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(3, 500))
    pred = ref + rng.normal(0, 0.2, ref.shape)
    gapped_pred, gapped_ref = pred.copy(), ref.copy()
    gapped_pred[0, 100:150] = np.nan  # a gap in one lead of the prediction
    gapped_ref[1, 0] = np.inf
    per_lead = M.ecg_per_lead(gapped_pred, gapped_ref, ("II", "V1", "V5"))
    keep0, keep1 = np.r_[0:100, 150:500], np.r_[1:500]
    assert per_lead["II"]["pearson_r"] == pytest.approx(np.corrcoef(pred[0, keep0], ref[0, keep0])[0, 1])
    assert per_lead["V1"]["pearson_r"] == pytest.approx(np.corrcoef(pred[1, keep1], ref[1, keep1])[0, 1])
    rmse = np.sqrt(np.mean((pred[0, keep0] - ref[0, keep0]) ** 2)) * 1000
    assert per_lead["II"]["rmse_uv"] == pytest.approx(rmse)
    # the gate scores the same gapped record the same way (it used to give NaN for the gapped lead)
    gate_r = M.pearson_per_sample_lead(gapped_pred[None], gapped_ref[None])[0]
    assert gate_r == pytest.approx([v["pearson_r"] for v in per_lead.values()])
    assert M.pearson(gapped_pred[None], gapped_ref[None]) == pytest.approx(np.mean(gate_r))
    # flat or empty leads have no Pearson r
    flat = M.ecg_per_lead(np.zeros((1, 10)), ref[:1, :10], ("I",))
    assert math.isnan(flat["I"]["pearson_r"]) and flat["I"]["rmse_uv"] > 0
    assert math.isnan(M.ecg_per_lead(np.full((1, 10), np.nan), ref[:1, :10], ("I",))["I"]["rmse_uv"])


def test_latency_summary_has_one_key_set():
    x = np.random.default_rng(0).gamma(2.0, 3.0, 501)
    s = latency_summary(list(x))
    assert tuple(s) == LATENCY_KEYS == ("p50", "p90", "p95", "p99", "max", "mean", "count")
    assert s["p95"] == pytest.approx(np.percentile(x, 95)) and s["count"] == 501 and s["max"] == x.max()
    assert latency_summary([]) == {}
    lo, hi = median_ci(x, n_boot=200)
    assert lo <= s["p50"] <= hi


def test_one_cosine_with_one_zero_norm_rule_and_one_comparison():
    a = np.array([1.0, 2.0, 3.0])
    assert cosine(a, 2 * a) == pytest.approx(1.0) and cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), a) == 0.0 == cosine(a, np.zeros(3))
    d = compare_outputs(a, a + [0.0, 0.1, -0.3], atol=0.2)
    assert d.max_abs == pytest.approx(0.3) and d.mean_abs == pytest.approx(0.4 / 3)
    assert d.max_rel == pytest.approx(0.3 / (3 + 1e-6)) and d.within_tolerance is False
    nan = compare_outputs(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), atol=1e-6)
    assert nan.max_abs == 0.0 and nan.within_tolerance is True
    assert compare_outputs(np.array([np.nan, 1.0]), np.array([0.0, 1.0])).max_abs == math.inf
    with pytest.raises(DataError, match="output 0 has shape"):
        compare_output_lists([a], [a[:2]], "the artifact")
    with pytest.raises(DataError, match="has 2 outputs"):
        compare_output_lists([a], [a, a], "the artifact")


def test_ci_rule_passes_only_a_whole_ci_within_the_budget_and_calls_a_straddle_noise():
    ref, cand, tgt = _classifier(n=400, seed=3)
    point = Gate("auroc", n_boot=300).check(ref, cand, tgt)
    lo, hi = point.ci95
    assert lo < point.drop < hi
    within = Gate("auroc", max_drop=hi + 1e-6, n_boot=300, ci_rule=True).check(ref, cand, tgt)
    assert within.passed is True and within.verdict == "passed"
    # the point drop is within this budget, but the CI reaches above it: failed, within noise
    straddle = Gate("auroc", max_drop=(point.drop + hi) / 2, n_boot=300, ci_rule=True).check(ref, cand, tgt)
    assert straddle.passed is False and straddle.within_noise and straddle.verdict == "within noise"
    assert Gate("auroc", max_drop=(point.drop + hi) / 2, n_boot=300).check(ref, cand, tgt).passed is True
    above = Gate("auroc", max_drop=lo - 1e-6, n_boot=300, ci_rule=True).check(ref, cand, tgt)
    assert above.passed is False and not above.within_noise and above.verdict == "failed"
    assert "on 400 samples" in above.describe() and "95% CI" in above.describe()
    d = straddle.to_dict("pruned")
    assert d["verdict"] == "within noise" and d["ci_half_width"] == pytest.approx((hi - lo) / 2, abs=1e-6)


def test_precision_rule_is_a_third_of_the_budget_and_says_how_many_samples_reach_it():
    assert precise_enough([0.0, 0.002], 0.003) is True  # half-width 0.001 = budget / 3
    assert precise_enough([0.0, 0.0021], 0.003) is False
    assert precise_enough([float("nan"), float("nan")], 0.003) is False
    # half-width 0.002 on 500 samples: 1/sqrt(n) scaling needs (0.002/0.001)^2 = 4x the samples (+ margin)
    assert 2000 <= samples_for_precision(500, [0.0, 0.004], 0.003) <= 2400
    assert samples_for_precision(500, [0.0, 0.001], 0.003) == 500
    # the measured half-width does shrink as 1/sqrt(n) for a paired AUROC difference
    widths = []
    for n in (300, 1200):
        ref, cand, tgt = _classifier(n=n, seed=5)
        widths.append(Gate("auroc", max_drop=0.01, n_boot=400).check(ref, cand, tgt).ci_half_width)
    assert widths[1] == pytest.approx(widths[0] / 2, rel=0.35)


def test_precision_note_separates_within_noise_from_a_loose_estimate_on_signal():
    def result(lo: float, hi: float, max_drop: float | None = 0.003) -> GateResult:
        return GateResult("auroc", 0.9, 0.9, (lo + hi) / 2, [lo, hi], max_drop, True, 8000)

    assert result(-0.0005, 0.0005).precision_note() is None  # half-width 0.0005 <= 0.003 / 3
    assert result(-0.02, 0.02, None).precision_note() is None  # no budget: informative only
    straddles = result(-0.001, 0.006).precision_note("--eval set")
    assert "within noise" in straddles and "larger --eval set" in straddles
    below = result(-0.0168, -0.0099).precision_note()
    assert "on signal" in below and "lies below the budget 0.003" in below and "noise" not in below
    assert "lies above" in result(0.01, 0.02).precision_note()
