"""Clinical metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medge.common.errors import DataError, UnknownNameError
from medge.evaluate import metrics as M
from medge.evaluate.gate import drop_ci


def test_auroc_hand_computed_with_ties():
    # positives 0.8, 0.4; negatives 0.4, 0.1, 0.3.
    # pairs (pos > neg): 0.8 beats all 3; 0.4 beats 0.1, 0.3 and ties 0.4 → 2.5. (3+2.5)/6
    scores = np.array([0.8, 0.4, 0.4, 0.1, 0.3])
    labels = np.array([1, 1, 0, 0, 0])
    assert M.auroc(scores, labels) == pytest.approx(5.5 / 6)


def test_auroc_per_label_and_macro_skip_single_class_label():
    out = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.7, 0.3, 0.5], [0.1, 0.6, 0.5]])
    tgt = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    per = M.auroc_per_label(out, tgt)
    assert per[0] == pytest.approx(1.0)
    # label 1: positives 0.8, 0.3; negatives 0.1, 0.6 → 0.8>0.1,0.8>0.6,0.3>0.1 → 3/4
    assert per[1] == pytest.approx(0.75)
    assert math.isnan(per[2])
    assert M.auroc(out, tgt) == pytest.approx(0.875)
    assert M.task_metric("auroc", out, tgt) == pytest.approx(0.875)


def test_auroc_without_both_classes_is_a_data_error():
    with pytest.raises(DataError, match="both"):
        M.auroc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_sensitivity_at_specificity_threshold_on_negatives():
    neg = np.arange(10) / 10.0  # 0.0 … 0.9; spec 0.9 → 9th smallest = 0.8 is the threshold
    pos = np.array([0.95, 0.85, 0.8, 0.5])
    scores = np.concatenate([neg, pos])
    labels = np.concatenate([np.zeros(10), np.ones(4)])
    assert M.sensitivity_at_specificity(scores, labels) == pytest.approx(0.5)
    # spec 0.5 → 5th smallest negative 0.4 → all four positives exceed it
    assert M.sensitivity_at_specificity(scores, labels, 0.5) == pytest.approx(1.0)
    assert M.task_metric("sens@spec:0.5", scores, labels) == pytest.approx(1.0)
    assert M.task_metric("sens@spec", scores, labels) == pytest.approx(0.5)


def test_dice_and_iou_hand_computed_and_empty_empty():
    pred = np.zeros((2, 1, 2, 3))
    pred[0, 0, 0, :] = [0.9, 0.6, 0.4]  # predicted {0,1}
    true = np.zeros((2, 2, 3))
    true[0, 0, 1:] = 1  # true {1,2}
    # sample 0: inter 1, |p| 2, |t| 2 → dice 0.5, iou 1/3; sample 1 empty-empty → 1
    assert M.dice(pred, true) == pytest.approx(0.75)
    assert M.iou(pred, true) == pytest.approx((1 / 3 + 1) / 2)
    assert M.dice_per_sample(pred, true).tolist() == pytest.approx([0.5, 1.0])


def test_dice_shape_mismatch_is_data_error():
    with pytest.raises(DataError, match="per sample"):
        M.dice(np.zeros((2, 4)), np.zeros((2, 5)))


def test_pearson_rmse_mae_hand_computed():
    t = np.array([[[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]]])  # 1 sample, 2 leads, mV
    o = np.array([[[2.0, 4.0, 6.0, 8.0], [1.0, 0.0, 1.0, 0.0]]])
    assert M.pearson_per_lead(o, t) == pytest.approx([1.0, -1.0])
    assert M.pearson(o, t) == pytest.approx(0.0)
    err = (o - t).ravel()  # 1,2,3,4,1,1,1,1 mV
    assert M.rmse_uv(o, t) == pytest.approx(math.sqrt(np.mean(err**2)) * 1000)
    assert M.mae_uv(o, t) == pytest.approx(1750.0)


def test_accuracy_threshold_and_argmax():
    assert M.accuracy(np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 0])) == pytest.approx(0.75)
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert M.accuracy(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_defaults_names_and_drop_sign():
    assert M.default_metric_for_task("multilabel-classification") == "auroc"
    assert M.default_metric_for_task("classification") == "auroc"
    assert M.default_metric_for_task("segmentation") == "dice"
    assert M.default_metric_for_task("ecg-reconstruction") == "pearson"
    with pytest.raises(UnknownNameError, match="did you mean 'dice'"):
        M.task_metric("dise", np.zeros(2), np.zeros(2))
    assert M.metric_drop("auroc", 0.9, 0.85) == pytest.approx(0.05)
    assert M.metric_drop("rmse_uv", 10.0, 12.0) == pytest.approx(2.0)


def test_drop_ci_brackets_the_drop_and_is_zero_for_identical_outputs():
    rng = np.random.default_rng(1)
    tgt = rng.integers(0, 2, size=200)
    ref = np.clip(tgt * 0.6 + rng.normal(0.2, 0.2, 200), 0, 1)
    lo, hi = drop_ci(ref, ref, tgt, "auroc", n_boot=200)
    assert lo == hi == 0.0
    q = np.clip(ref + rng.normal(0, 0.3, 200), 0, 1)
    drop = M.metric_drop("auroc", M.auroc(ref, tgt), M.auroc(q, tgt))
    lo, hi = drop_ci(ref, q, tgt, "auroc", n_boot=300, seed=3)
    assert lo < drop < hi and lo > 0
    # per-sample fast path (dice) gives the same kind of bracket
    masks = rng.integers(0, 2, size=(50, 8, 8))
    p_ref = masks * 0.9 + 0.05
    p_q = np.where(rng.random((50, 8, 8)) < 0.1, 1 - p_ref, p_ref)
    d = M.dice(p_ref, masks) - M.dice(p_q, masks)
    lo, hi = drop_ci(p_ref, p_q, masks, "dice", n_boot=300)
    assert lo < d < hi
