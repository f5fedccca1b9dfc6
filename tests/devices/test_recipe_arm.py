"""`medge compile --target raspberry-pi-5` through the real CLI: ONNX Runtime QDQ INT8 / FP32, or
LiteRT+XNNPACK with ``--option runtime=litert``; the artifacts run here and match the FP32 model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.cli_checks import assert_one_line_error
from medge.devices import TARGETS, get_target

ARM = [n for n in TARGETS.names() if get_target(n).recipe == "arm"]
FAST_CALIB = ("--calib", "synthetic:cxr", "--option", "calib_samples=16")


def _compile(run_cli, model, target, out, *extra):
    return run_cli("compile", model, "--target", target, "-o", out, *extra, report=True)


def _max_diff(artifact, runtime, onnx_path, shape, n=3):
    import onnxruntime as ort

    from medge.runtimes import open_runtime
    from medge.runtimes.base import dequantize_output, quantize_input

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    worst = 0.0
    with open_runtime(artifact, runtime) as rt:
        i_info, o_info = rt.inputs()[0], rt.outputs()[0]
        for _ in range(n):
            x = ((rng.random(shape) - 0.5) / 0.25).astype(np.float32)
            ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            got = dequantize_output(rt.infer({i_info.name: quantize_input(x, i_info)})[o_info.name], o_info)
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def test_raspberry_pi_uses_this_recipe():
    assert ARM == ["raspberry-pi-5"]


def test_int8_qdq_onnx_for_raspberry_pi(run_cli, tiny_onnx, tmp_path):
    import onnx

    out = tmp_path / "pi"
    res = _compile(run_cli, tiny_onnx, "raspberry-pi-5", out, "--precision", "int8", *FAST_CALIB)
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
    assert _max_diff(out / "model.int8.onnx", "onnxruntime", tiny_onnx, (1, 1, 64, 64)) < 0.05


def test_fp32_bundle_is_the_onnx_model(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "pi32"
    res = _compile(run_cli, tiny_onnx, "raspberry-pi-5", out, "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    assert res.report["primary_artifact"] == "model.onnx" and res.report["gate"] is None
    assert _max_diff(out / "model.onnx", "onnxruntime", tiny_onnx, (1, 1, 64, 64)) < 1e-6
    assert run_cli("verify", out).returncode == 0


def test_unknown_runtime_is_a_usage_error(run_cli, tiny_onnx, tmp_path):
    res = _compile(run_cli, tiny_onnx, "raspberry-pi-5", tmp_path / "x", "--option", "runtime=tensorrt")
    assert_one_line_error(res, "runtime", code=2)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_int8_tflite_with_xnnpack_for_raspberry_pi(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "pi-litert"
    res = _compile(run_cli, tiny_onnx, "raspberry-pi-5", out, "--precision", "int8", *FAST_CALIB,
                   "--option", "runtime=litert")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["primary_artifact"] == "model.tflite" and rep["runtime"] == "litert" and rep["runtime_device"] == "CPU"
    assert rep["preflight"]["delegate"] == "xnnpack" and rep["preflight"]["ok"]
    manifest = json.loads((out / "manifest.json").read_text())
    lit = manifest["extra"]["litert"]
    assert lit["io_layout"] == "channel_first" and lit["threads"] == 4
    assert lit["inputs"][0]["shape"] == [1, 1, 64, 64]
    assert _max_diff(out / "model.tflite", "litert", tiny_onnx, (1, 1, 64, 64)) < 0.05
    assert run_cli("verify", out).returncode == 0


@pytest.mark.slow
def test_int8_that_fails_parity_writes_nothing_unless_a_metric_gate_decides(run_cli, tmp_path):
    # the hybrid ViT's uint8 activations move some probabilities far from FP32 (min cosine ≈ 0.57)
    onnx_path = tmp_path / "vit.onnx"
    assert run_cli("export", "cxr-hybrid-vit", "-o", onnx_path).returncode == 0
    out = tmp_path / "pi"
    res = _compile(run_cli, onnx_path, "raspberry-pi-5", out)
    line = assert_one_line_error(res, "fails its gate", "nothing was written", "--eval")
    assert "cosine" in line and not out.exists()
    assert res.report["written"] is False and res.report["gate"]["passed"] is False
    # with a clinical gate the metric decides (AUROC is preserved), and the bundle is written
    res = _compile(run_cli, onnx_path, "raspberry-pi-5", out, "--eval", "synthetic", "--max-drop", "0.005")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["gate"]["passed"] is True and run_cli("verify", out).returncode == 0
