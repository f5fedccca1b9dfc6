"""Users' own models for the phone NPU through the real CLI (issue #20): ``medge compile M.onnx
--target android-qualcomm-npu --precision int8 --model-ref module:factory``.

* A two-input promptable segmenter (image + click) calibrated from an ``.npz`` with one array per
  input: the LiteRT route used to probe the PyTorch model with the image alone ("rejects input
  shape 1x1x128x128 (rank 4)").
* A Mamba-style ECG model whose normalised scan divides by a sum that comes near zero: the int8
  DIV kernel refuses a divisor at its zero point, which is a failed rung; the DIV moves up
  (int16, then float) and the ladder goes on.

Both bundles are then run on the LiteRT interpreter against their stored FP32 reference outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from device_checks import compile_cli

DEVICES_DIR = Path(__file__).resolve().parent
SEG, ECG = "npu_user_models:promptable_seg", "npu_user_models:mamba_div_ecg"


@pytest.fixture
def user_models(monkeypatch):
    """tests/devices on the `medge` subprocess's PYTHONPATH (for npu_user_models factories)."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(DEVICES_DIR), *([existing] if existing else [])]))


def _export(run_cli, model: str, path: Path, *args: str) -> Path:
    res = run_cli("export", model, "-o", path, *args)
    assert res.returncode == 0, res.stderr[-2000:]
    return path


def _runs_against_its_reference(run_cli, bundle: Path) -> dict:
    """``medge compare BUNDLE --reference`` on the LiteRT interpreter: the .tflite against its stored FP32 outputs."""
    res = run_cli("compare", bundle, "--reference", "--runtime-device", "cpu", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["ok"] is True and res.report["n_inputs"] > 0
    (artifact,) = res.report["artifacts"]
    assert artifact["passed"] is True and artifact["runtime"] == "litert" and artifact["cosine"] >= 0.95
    return artifact


def _ladder(report: dict) -> list[dict]:
    ladder = report["gate"]["ladder"]
    assert report["gate"]["passed"] is True and ladder[-1]["passed"] is True
    for rung in ladder:  # every rung says what it tried and how it ended
        assert rung["action"] and rung["gate"]["summary"] and set(rung["op_precisions"]) == {"int8", "int16", "float"}
    return ladder


def test_two_input_user_model_calibrates_every_input_from_the_npz(run_cli, tmp_path, user_models):
    onnx_path = _export(run_cli, SEG, tmp_path / "seg.onnx", "--input-shape", "image=1x1x128x128",
                        "--input-shape", "point=1x2", "--input-default", "point=[0.5,0.5]")
    rng = np.random.default_rng(0)
    points = rng.uniform(0.1, 0.9, (16, 2)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", image=rng.random((16, 1, 128, 128), dtype=np.float32), point=points)
    out = tmp_path / "qnn"
    res = compile_cli(run_cli, onnx_path, "android-qualcomm-npu", out, "--precision", "int8", "--model-ref", SEG,
                      "--calib", tmp_path / "calib.npz", "--option", "calib_samples=16")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["calibration"]["source"].endswith("calib.npz") and res.report["calibration"]["n"] == 16
    _ladder(res.report)
    lit = json.loads((out / "manifest.json").read_text())["extra"]["litert"]
    assert lit["torch_source"] == {"kind": "model_ref", "reference": SEG}  # the factory, fed both inputs
    image, point = lit["inputs"]
    assert image["shape"] == [1, 128, 128, 1] and point["shape"] == [1, 2]
    assert image["dtype"] == point["dtype"] == "int8"
    scale, zero_point = point["quantization"]["scale"], point["quantization"]["zero_point"]
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    # the click's range is the npz's points (the declared default alone would give one value)
    assert low <= points.min() + scale and high >= points.max() - scale and high - low >= 0.5 * np.ptp(points)
    _runs_against_its_reference(run_cli, out)


def test_a_kernel_refusal_is_a_failed_rung_and_the_ladder_goes_on(run_cli, tmp_path, user_models):
    onnx_path = _export(run_cli, ECG, tmp_path / "ecg.onnx", "--input-shape", "1x3x5000", "--like", "ecg-3to12")
    out = tmp_path / "qnn"
    res = compile_cli(run_cli, onnx_path, "android-qualcomm-npu", out, "--precision", "int8", "--model-ref", ECG,
                      "--calib", "synthetic:ecg", "--option", "calib_samples=16")
    assert res.returncode == 0, res.stderr[-2000:]
    ladder = _ladder(res.report)
    first = ladder[0]
    assert first["action"] == "all int8" and first["gate"]["kind"] == "refused" and first["passed"] is False
    refusal = first["gate"]["refused"]
    assert (refusal["op_type"], refusal["stage"], refusal["dtype"]) == ("DIV", "invoke", "int8")
    assert "zero_point" in refusal["message"] and "DIV goes to int16" in first["gate"]["summary"]
    assert "litert ladder attempt 0 (all int8): failed LiteRT refused it: the int8 DIV kernel" in res.stderr
    moved = ladder[1]
    assert moved["action"].startswith("all int8, refused DIV to ") and refusal["scope"] in moved["int16_ops"] + moved["float_ops"]
    final = ladder[-1]
    assert refusal["scope"] in final["int16_ops"] + final["float_ops"]
    lit = json.loads((out / "manifest.json").read_text())["extra"]["litert"]
    assert lit["full_integer"] and lit["inputs"][0]["dtype"] == lit["outputs"][0]["dtype"] == "int8"
    _runs_against_its_reference(run_cli, out)  # the bundle's .tflite runs: no zero divisor refused
