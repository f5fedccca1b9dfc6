"""`medge compile --target raspberry-pi-5` through the real CLI: ONNX Runtime QDQ INT8 / FP32, or
LiteRT+XNNPACK with ``--option runtime=litert``; the artifacts run here and match the FP32 model."""

from __future__ import annotations

import json

import pytest

from fixtures.cli_checks import assert_one_line_error
from medge.devices import TARGETS, get_target
from device_checks import FAST_CALIB, artifact_vs_onnx, compile_cli, export_zoo

ARM = [n for n in TARGETS.names() if get_target(n).recipe == "arm"]




def test_raspberry_pi_uses_this_recipe():
    assert ARM == ["raspberry-pi-5"]


def test_int8_qdq_onnx_for_raspberry_pi(run_cli, tiny_onnx, tmp_path):
    import onnx

    out = tmp_path / "pi"
    res = compile_cli(run_cli, tiny_onnx, "raspberry-pi-5", out, "--precision", "int8", *FAST_CALIB)
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["written"] and rep["primary_artifact"] == "model.int8.onnx" and rep["runtime"] == "onnxruntime"
    assert rep["runtime_device"] == "CPU" and rep["preflight"]["ok"]
    assert rep["calibration"]["source"] == "synthetic:cxr"
    assert rep["gate"]["passed"] is True and rep["gate"]["parity"]["min_cosine"] >= 0.95

    model = onnx.load(str(out / "model.int8.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    inits = {i.name: i for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits]
    assert any(z.data_type == onnx.TensorProto.UINT8 for z in zero_points)  # uint8 activations
    assert any(z.data_type == onnx.TensorProto.INT8 for z in zero_points)  # int8 weights

    manifest = json.loads((out / "manifest.json").read_text())
    extra = manifest["extra"]["onnxruntime"]
    assert extra["threads"] == 4 and extra["quant_format"] == "QDQ" and extra["activation_type"] == "uint8"
    assert "intra_op_num_threads = 4" in (out / "README.txt").read_text()
    assert run_cli("verify", out).returncode == 0
    assert artifact_vs_onnx(out / "model.int8.onnx", "onnxruntime", tiny_onnx, (1, 1, 64, 64), seed=11)[0] < 0.05


def test_fp32_bundle_is_the_onnx_model(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "pi32"
    res = compile_cli(run_cli, tiny_onnx, "raspberry-pi-5", out, "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    assert res.report["primary_artifact"] == "model.onnx" and res.report["gate"] is None
    assert artifact_vs_onnx(out / "model.onnx", "onnxruntime", tiny_onnx, (1, 1, 64, 64), seed=11)[0] < 1e-6
    assert run_cli("verify", out).returncode == 0


def test_unknown_runtime_is_a_usage_error(run_cli, tiny_onnx, tmp_path):
    res = compile_cli(run_cli, tiny_onnx, "raspberry-pi-5", tmp_path / "x", "--option", "runtime=tensorrt")
    assert_one_line_error(res, "runtime", code=2)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_int8_tflite_with_xnnpack_for_raspberry_pi(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "pi-litert"
    res = compile_cli(run_cli, tiny_onnx, "raspberry-pi-5", out, "--precision", "int8", *FAST_CALIB,
                   "--option", "runtime=litert")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["primary_artifact"] == "model.tflite" and rep["runtime"] == "litert" and rep["runtime_device"] == "CPU"
    assert rep["preflight"]["delegate"] == "xnnpack" and rep["preflight"]["ok"]
    manifest = json.loads((out / "manifest.json").read_text())
    lit = manifest["extra"]["litert"]
    assert lit["io_layout"] == "channel_first" and lit["threads"] == 4
    assert lit["inputs"][0]["shape"] == [1, 1, 64, 64]
    assert artifact_vs_onnx(out / "model.tflite", "litert", tiny_onnx, (1, 1, 64, 64), seed=11)[0] < 0.05
    assert run_cli("verify", out).returncode == 0


@pytest.mark.slow
def test_int8_that_fails_parity_writes_nothing_unless_a_metric_gate_decides(run_cli, tmp_path):
    # the hybrid ViT's uint8 activations move some probabilities far from FP32 (min cosine ≈ 0.57)
    onnx_path = tmp_path / "vit.onnx"
    export_zoo(run_cli, "cxr-hybrid-vit", onnx_path)
    out = tmp_path / "pi"
    res = compile_cli(run_cli, onnx_path, "raspberry-pi-5", out)
    line = assert_one_line_error(res, "fails its gate", "nothing was written", "--eval")
    assert "cosine" in line and not out.exists()
    assert res.report["written"] is False and res.report["gate"]["passed"] is False
    # with a clinical gate the metric decides (AUROC is preserved), and the bundle is written
    res = compile_cli(run_cli, onnx_path, "raspberry-pi-5", out, "--eval", "synthetic", "--max-drop", "0.005")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["gate"]["passed"] is True and run_cli("verify", out).returncode == 0
