"""The PyTorch source of an ONNX model for recipes that convert from PyTorch (LiteRT):
``--model-ref`` with ``--model-kwargs``/``--weights``, or the source recorded at export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fixtures.cli_checks import assert_one_line_error
from device_checks import FAST_CALIB, compile_cli

INSTNORM = "fixtures.tiny_models:tiny_instnorm"  # InstanceNorm + LeakyReLU: the ONNX→PyTorch route lacks them
TESTS_DIR = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_models(monkeypatch):
    """tests/ on the `medge` subprocess's PYTHONPATH (for fixtures.tiny_models factories)."""
    existing = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), *([existing] if existing else [])]))
    import fixtures.tiny_models as module

    return module


def _export_with_kwargs_and_weights(run_cli, tmp_path, tiny_models):
    model = tiny_models.tiny_instnorm(width=6)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights))
    onnx_path = tmp_path / "m.onnx"
    res = run_cli("export", INSTNORM, "--model-kwargs", '{"width": 6}', "--weights", weights, "--input-shape",
                  "1x1x64x64", "--like", "cxr-densenet-tiny", "-o", onnx_path, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return onnx_path, weights


def test_compile_reads_the_source_recorded_at_export(run_cli, tmp_path, tiny_models):
    onnx_path, weights = _export_with_kwargs_and_weights(run_cli, tmp_path, tiny_models)
    res = compile_cli(run_cli, onnx_path, "intel-cpu", tmp_path / "cpu", "--precision", "fp32")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"PyTorch source from the ONNX metadata: {INSTNORM} with kwargs {{'width': 6}}" in res.report["notes"]
    weights.write_bytes(b"changed")
    res = compile_cli(run_cli, onnx_path, "intel-cpu", tmp_path / "cpu2", "--precision", "fp32")
    assert res.returncode == 0, res.stderr[-2000:]
    assert any("has changed since; it is not used" in n for n in res.report["notes"])


@pytest.mark.slow
def test_compile_finds_the_recorded_source_with_kwargs_and_weights(run_cli, tmp_path, tiny_models):
    onnx_path, weights = _export_with_kwargs_and_weights(run_cli, tmp_path, tiny_models)
    out = tmp_path / "qnn"
    res = compile_cli(run_cli, onnx_path, "android-qualcomm-npu", out, "--precision", "int8", *FAST_CALIB)
    assert res.returncode == 0, res.stderr[-2000:]
    assert any(n.startswith("PyTorch source from the ONNX metadata: " + INSTNORM) for n in res.report["notes"])
    source = json.loads((out / "manifest.json").read_text())["extra"]["litert"]["torch_source"]
    assert source["kind"] == "model_ref"
    assert json.loads(source["reference"]) == {"ref": INSTNORM, "kwargs": {"width": 6}, "weights": str(weights.resolve())}


def test_model_kwargs_need_model_ref_and_weights_must_exist(run_cli, tmp_path, tiny_onnx):
    res = compile_cli(run_cli, tiny_onnx, "android-qualcomm-npu", tmp_path / "a", "--model-kwargs", '{"width": 6}')
    assert_one_line_error(res, "add --model-ref", code=2)
    res = compile_cli(run_cli, tiny_onnx, "android-qualcomm-npu", tmp_path / "b", "--model-ref", INSTNORM,
                      "--weights", tmp_path / "missing.safetensors")
    assert_one_line_error(res, "--weights", code=2)
    res = compile_cli(run_cli, tiny_onnx, "android-qualcomm-npu", tmp_path / "c", "--model-ref", INSTNORM,
                      "--model-kwargs", "[1]")
    assert_one_line_error(res, "--model-kwargs must be a JSON object", code=2)


@pytest.mark.slow
def test_explicit_model_ref_kwargs_and_weights_beat_a_changed_record(run_cli, tmp_path, tiny_models):
    onnx_path, weights = _export_with_kwargs_and_weights(run_cli, tmp_path, tiny_models)
    moved = tmp_path / "moved.safetensors"
    weights.rename(moved)  # the recorded source is gone: without --model-ref the ONNX route fails
    out = tmp_path / "qnn"
    res = compile_cli(run_cli, onnx_path, "android-qualcomm-npu", out, "--precision", "int8", *FAST_CALIB,
                      "--model-ref", INSTNORM, "--model-kwargs", '{"width": 6}', "--weights", moved)
    assert res.returncode == 0, res.stderr[-2000:]
    source = json.loads((out / "manifest.json").read_text())["extra"]["litert"]["torch_source"]
    assert source["kind"] == "model_ref" and json.loads(source["reference"])["weights"] == str(moved.resolve())
