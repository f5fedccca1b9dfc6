"""Synthetic generators: shapes, determinism, physics and label/image agreement."""

from __future__ import annotations

import numpy as np
import pytest

from medge.calibration.synthetic import TASKS, generate
from medge.calibration.synthetic.ecg import FS_HZ, INPUT_INDEX, STANDARD_LEADS
from medge.common.errors import DataError

SHAPES = {
    "cxr": ((224, 224), (4,), np.float32),
    "us-frame": ((128, 128), (), np.float32),
    "us-seg": ((256, 256), (256, 256), np.uint8),
    "ecg": ((3, 5000), (12, 5000), np.float32),
}


@pytest.mark.parametrize("task", TASKS)
def test_shapes_dtypes_ranges(task):
    x, y = generate(task, 5, seed=3)
    in_shape, target_shape, target_dtype = SHAPES[task]
    assert x.shape == (5, *in_shape) and x.dtype == np.float32
    assert y.shape == (5, *target_shape) and y.dtype == target_dtype
    assert np.isfinite(x).all() and np.isfinite(y.astype(np.float32)).all()
    if task != "ecg":
        assert x.min() >= 0.0 and x.max() <= 1.0 and x.std() > 0.05


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_from_seed(task):
    x1, y1 = generate(task, 3, seed=11)
    x2, y2 = generate(task, 3, seed=11)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    x3, _ = generate(task, 3, seed=12)
    assert not np.array_equal(x1, x3)
    assert not np.array_equal(x1[0], x1[1])


def test_unknown_task_and_bad_count_are_data_errors():
    with pytest.raises(DataError, match="did you mean 'cxr'"):
        generate("cxrr", 2)
    with pytest.raises(DataError):
        generate("cxr", -1)
    x, y = generate("ecg", 0)
    assert x.shape == (0, 3, 5000) and y.shape == (0, 12, 5000)


def test_cxr_prevalence_and_independence():
    _, y = generate("cxr", 200, seed=5)
    prevalence = y.mean(axis=0)
    assert ((prevalence > 0.2) & (prevalence < 0.4)).all(), prevalence
    corr = np.corrcoef(y.T)[np.triu_indices(4, 1)]
    assert np.abs(corr).max() < 0.15


def test_cxr_findings_change_the_image_where_expected():
    from medge.calibration.synthetic.cxr import generate_cxr

    # same anatomy twice: all findings off vs all on (prevalence 0 / 1, identical random stream)
    base, _ = generate_cxr(16, np.random.default_rng(9), prevalence=0.0)
    sick, y = generate_cxr(16, np.random.default_rng(9), prevalence=1.0)
    assert y.all()
    diff = sick - base
    h = base.shape[1]
    # effusion (bases) adds opacity in the lower lung zones; cardiomegaly widens the heart shadow
    lower = diff[:, int(0.55 * h):int(0.8 * h)].mean()
    assert lower > 0.01
    # the findings are subtle: the mean change stays small compared with the anatomy's contrast
    assert np.abs(diff).mean() < 0.25 * base.std()


def test_us_frame_labels_mark_lesions():
    from medge.calibration.synthetic.ultrasound import generate_us

    img, present, masks = generate_us(48, np.random.default_rng(4), size=128, lesion_prob=0.5)
    area = masks.reshape(48, -1).sum(axis=1)
    assert ((area > 0) == (present > 0)).all()
    assert 0.25 < present.mean() < 0.75


def test_us_seg_masks_agree_with_hypoechoic_lesions():
    from scipy import ndimage

    x, masks = generate("us-seg", 24, seed=6)
    assert set(np.unique(masks)) <= {0, 1}
    with_lesion = [i for i in range(len(x)) if masks[i].sum() > 50]
    assert len(with_lesion) >= 12
    darker = 0
    for i in with_lesion:
        m = masks[i].astype(bool)
        ring = ndimage.binary_dilation(m, iterations=8) & ~ndimage.binary_dilation(m, iterations=3) & (x[i] > 0)
        darker += x[i][m].mean() < x[i][ring].mean()
    assert darker >= 0.9 * len(with_lesion)


def test_ecg_einthoven_goldberger_exact():
    x, y = generate("ecg", 16, seed=8)
    leads = {name: y[:, k].astype(np.float64) for k, name in enumerate(STANDARD_LEADS)}
    i, ii, iii = leads["I"], leads["II"], leads["III"]
    np.testing.assert_allclose(ii, i + iii, atol=1e-6)
    np.testing.assert_allclose(leads["aVR"], -(i + ii) / 2, atol=1e-6)
    np.testing.assert_allclose(leads["aVL"], i - ii / 2, atol=1e-6)
    np.testing.assert_allclose(leads["aVF"], ii - i / 2, atol=1e-6)
    np.testing.assert_array_equal(x, y[:, list(INPUT_INDEX)])  # inputs are leads II, V1, V5


def test_ecg_amplitudes_and_heart_rate_are_physiological():
    _, y = generate("ecg", 24, seed=10)
    lead_ii = y[:, 1]
    span = lead_ii.max(axis=1) - lead_ii.min(axis=1)
    assert (span > 0.3).all() and (span < 6.0).all()  # mV
    # heart rate from the autocorrelation peak of lead II (QRS dominated after differencing)
    rates = []
    for sig in np.diff(lead_ii, axis=1):
        sig = sig - sig.mean()
        ac = np.correlate(sig, sig, "full")[sig.size - 1:]
        lo, hi = int(FS_HZ * 60 / 120), int(FS_HZ * 60 / 45)
        rates.append(60 * FS_HZ / (lo + int(np.argmax(ac[lo:hi]))))
    rates = np.array(rates)
    assert ((rates > 45) & (rates < 120)).all(), rates
    assert rates.std() > 5  # heart rate varies between records
