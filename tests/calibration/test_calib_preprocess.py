"""Preprocessing maths and sampling quotas, checked against the formulas written out here."""

from __future__ import annotations

import numpy as np
import pytest
from calib_fixtures import image_meta, image_shape, write_dicom

from medge.calibration import load_data
from medge.calibration.preprocess import resample_signal, to_millivolts, window_to_unit
from medge.calibration.sampling import _quotas
from medge.common.errors import DataError


def test_voi_functions_follow_ps3_3():
    x = np.array([-100.0, 0.0, 40.0, 50.0, 60.0, 200.0])
    np.testing.assert_allclose(window_to_unit(x, 50, 100, "LINEAR_EXACT"),
                               np.clip((x - 50) / 100 + 0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(window_to_unit(x, 50, 100, "SIGMOID"),
                               1 / (1 + np.exp(-4 * (x - 50) / 100)), atol=1e-6)
    assert window_to_unit(np.array([0.0, 1.0]), 0.5, 1, "LINEAR").tolist() == [0.0, 1.0]
    with pytest.raises(DataError, match="LINEAR, LINEAR_EXACT or SIGMOID"):
        window_to_unit(x, 50, 100, "GAMMA")
    with pytest.raises(DataError, match=">= 1"):
        window_to_unit(x, 50, 0.5, "LINEAR")


def test_multivalued_window_and_voi_function_from_the_file(tmp_path, ramp12):
    meta = image_meta(mean=(0.0,), std=(1.0,))
    path = write_dicom(tmp_path / "w.dcm", ramp12, WindowCenter=[2048, 100], WindowWidth=[1024, 10],
                       VOILUTFunction="SIGMOID")
    got = load_data(str(path), meta, input_name="image", input_shape=image_shape(meta)).samples[0].feeds["image"]
    np.testing.assert_allclose(got[0, 0], 1 / (1 + np.exp(-4 * (ramp12 - 2048.0) / 1024)), atol=1e-6)


def test_signal_helpers():
    t = np.arange(1000) / 250
    up = resample_signal(np.sin(2 * np.pi * t)[None], 250, 500)
    assert up.shape == (1, 2000)
    np.testing.assert_allclose(up[0, 200:1800], np.sin(2 * np.pi * np.arange(2000) / 500)[200:1800], atol=2e-3)
    np.testing.assert_allclose(to_millivolts(np.array([1500.0]), "uV"), [1.5])
    np.testing.assert_allclose(to_millivolts(np.array([0.002]), "V"), [2.0])
    with pytest.raises(DataError, match="unknown signal unit 'mmHg'"):
        to_millivolts(np.array([1.0]), "mmHg")


@pytest.mark.parametrize(("sizes", "n", "expected"), [
    ([50, 40, 10], 20, [10, 8, 2]),
    ([98, 1, 1], 10, [8, 1, 1]),  # rare classes keep one sample each
    ([5, 5], 3, [2, 1]),
    ([3, 1], 2, [1, 1]),
    ([2, 2, 2], 2, [1, 1, 0]),  # fewer samples than classes
])
def test_stratified_quotas(sizes, n, expected):
    quotas = _quotas(sizes, n)
    assert quotas == expected and sum(quotas) == n
