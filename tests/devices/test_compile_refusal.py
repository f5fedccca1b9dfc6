"""`medge compile` never writes an INT8 bundle that really breaks the model (default suite).

The model has one activation channel ~10⁴× the range of the others (tests/fixtures/tiny_models.py
`OutlierChannelNet`): per-tensor int8 scales round the other channels to zero, so the INT8 output
no longer tracks FP32. Without --eval that parity failure runs the fallback ladder (issue #26): the
outlier activation goes to 16 bits or its layer to FP32, and the bundle is written with every rung
in the gate — the same rule for every INT8 recipe (TensorRT, ARM, OpenVINO, ONNX Runtime). When no
rung passes, nothing is written. The same net without the outlier compiles at the first rung.
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


@pytest.mark.parametrize("target", [pytest.param("jetson-orin-nano", marks=pytest.mark.slow), "raspberry-pi-5",
                                    pytest.param("intel-cpu", marks=pytest.mark.slow), "local"])
def test_int8_collapse_falls_back_to_a_passing_rung(run_cli, models, tmp_path, target):
    """Issue #26: without --eval a parity failure runs the fallback ladder; every rung is reported."""
    damaged, _, calib = models
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, damaged, target, out, "--precision", "int8", "--calib", calib)
    assert res.returncode == 0, res.stderr[-2000:]
    gate = res.report["gate"]
    rungs = gate["rungs"]
    assert len(rungs) >= 2 and rungs[0]["passed"] is False and rungs[-1]["passed"] is True
    assert all(r["passed"] is False for r in rungs[:-1])
    first = rungs[0]["gate"]["parity"]
    assert first["failed"] and (first["min_cosine"] < 0.9 or first["min_pearson"] < 0.8)
    assert rungs[-1]["fp32_nodes"] or rungs[-1]["int16_tensors"]
    assert gate["passed"] is True and gate["parity"]["passed"] is True and gate["parity"]["samples"] == 8
    assert gate["parity"]["data"]["source"] == str(calib) if "data" in gate["parity"] else True
    assert gate["numerics"]["name"] == ("ideal-simulation" if target in ("jetson-orin-nano", "raspberry-pi-5")
                                        else "host-kernels")
    assert "rung" in res.stdout  # the table shows the ladder
    assert run_cli("verify", out).returncode == 0


def test_int8_collapse_is_refused_when_no_rung_passes(run_cli, models, tmp_path):
    """A cosine of exactly 1 with no fallback steps (`--option max_fallback_steps=0`; with one, moving the
    outlier's conv to FP32 already gives FP32's output here): the ladder ends refused, nothing written, the
    rung reported."""
    damaged, _, calib = models
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, damaged, "local", out, "--precision", "int8", "--calib", calib, "--min-cosine", "1",
                      "--option", "max_fallback_steps=0")
    line = assert_one_line_error(res, "fails its gate", "parity vs FP32", "every one of", "--eval", str(out))
    assert "nothing was written" in line and "min cosine" in line
    assert not out.exists() and not list(tmp_path.glob(".bundle*")), list(tmp_path.iterdir())
    rep = res.report
    assert rep["written"] is False and rep["manifest_sha256"] is None and rep["files"] == {}
    gate = rep["gate"]
    assert gate["passed"] is False and gate["parity"]["passed"] is False and len(gate["rungs"]) >= 1
    assert all(r["passed"] is False for r in gate["rungs"])


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
