"""`medge compile` refuses an INT8 bundle that really breaks the model (default suite).

The model has one activation channel ~10⁴× the range of the others (tests/fixtures/tiny_models.py
`OutlierChannelNet`): per-tensor int8 scales round the other channels to zero, so the INT8 output
no longer tracks FP32. Nothing is forced (no negative --max-drop): the recipe's own check against
the FP32 model refuses the bundle — the same rule for every INT8 recipe (TensorRT, ARM, OpenVINO,
ONNX Runtime): per-sample cosine and per-channel Pearson r across the calibration samples. The same
net without the outlier compiles.
"""

from __future__ import annotations

import numpy as np
import pytest

from device_checks import compile_cli
from fixtures.cli_checks import assert_one_line_error

FACTORY = "fixtures.tiny_models:outlier_net"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(outlier ONNX, healthy ONNX, calibration .npy of model-ready 1×1×64×64 inputs)."""
    from medge.export import export_onnx

    root = tmp_path_factory.mktemp("outlier")
    damaged, healthy = root / "outlier.onnx", root / "healthy.onnx"
    export_onnx(FACTORY, damaged, input_shape=(1, 1, 64, 64))
    export_onnx(FACTORY, healthy, input_shape=(1, 1, 64, 64), model_kwargs={"outlier": 1.0})
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, 1, 64, 64), dtype=np.float32))
    return damaged, healthy, calib


@pytest.mark.parametrize("target", ["jetson-orin-nano", "raspberry-pi-5", "intel-cpu", "local"])
def test_int8_collapse_is_refused(run_cli, models, tmp_path, target):
    damaged, _, calib = models
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, damaged, target, out, "--precision", "int8", "--calib", calib)
    line = assert_one_line_error(res, "fails its gate", "parity vs FP32", "--eval", str(out))
    assert "nothing was written" in line
    assert not out.exists() and not list(tmp_path.glob(".bundle*")), list(tmp_path.iterdir())
    rep = res.report
    assert rep["written"] is False and rep["manifest_sha256"] is None and rep["files"] == {}
    gate, parity = rep["gate"], rep["gate"]["parity"]
    assert gate["passed"] is False and parity["passed"] is False and parity["failed"]
    assert parity["samples"] == 8 and parity["data"]["source"] == str(calib)
    cosine, pearson = parity["min_cosine_required"], parity["min_pearson_required"]
    assert 0.9 <= cosine < 1 and 0.5 < pearson < 1
    assert parity["min_cosine"] < cosine or parity["min_pearson"] < pearson
    assert parity["channels_correlated"] == 4  # the 4 logits, each across the 8 samples
    for text in parity["failed"]:
        assert text in line


@pytest.mark.parametrize("target", ["jetson-orin-nano", "intel-cpu", "local"])
def test_same_net_without_the_outlier_compiles(run_cli, models, tmp_path, target):
    _, healthy, calib = models
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, healthy, target, out, "--precision", "int8", "--calib", calib)
    assert res.returncode == 0, res.stderr[-2000:]
    parity = res.report["gate"]["parity"]
    assert res.report["written"] and parity["passed"] is True and parity["failed"] == []
    assert parity["min_cosine"] >= parity["min_cosine_required"] and parity["min_pearson"] >= parity["min_pearson_required"]
    assert run_cli("verify", out).returncode == 0
