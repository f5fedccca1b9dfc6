"""`medge compile` for the Intel targets (OpenVINO IR) through the real CLI, checked on OpenVINO CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fixtures.cli_checks import assert_one_line_error
from medge.devices import TARGETS, get_target
from device_checks import FAST_CALIB, compile_cli, export_zoo

INTEL = [n for n in TARGETS.names() if get_target(n).recipe == "openvino"]



def _ir_vs_onnx(xml, onnx_path, shape, n=3):
    """Max |IR - ONNX| on fresh random inputs, IR on the OpenVINO CPU with the f32 hint."""
    import onnxruntime as ort

    from medge.runtimes import open_runtime

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(123)
    worst = 0.0
    with open_runtime(xml, "openvino", precision="f32") as rt:
        name = rt.inputs()[0].name
        for _ in range(n):
            x = rng.standard_normal(shape).astype(np.float32)
            ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
            got = next(iter(rt.infer({name: x}).values()))
            worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def test_every_intel_target_uses_this_recipe():
    assert set(INTEL) == {"intel-cpu", "intel-igpu", "intel-npu"}


def test_fp32_ir_for_intel_cpu_matches_onnx(run_cli, tiny_onnx, tmp_path):
    import openvino as ov

    out = tmp_path / "ov"
    res = compile_cli(run_cli, tiny_onnx, "intel-cpu", out, "--precision", "fp32")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["written"] and rep["primary_artifact"] == "model.xml" and rep["runtime"] == "openvino"
    assert set(rep["files"]) == {"model.xml", "model.bin", "README.txt"} | {"reference/inputs.npz", "reference/outputs.npz"}
    assert rep["preflight"]["ok"] and rep["preflight"]["checker"] == "openvino.Core.query_model(CPU)"
    assert rep["preflight"]["unsupported"] == [] and "Convolution" in rep["preflight"]["op_types"]
    parity = rep["gate"]["parity"]
    assert rep["gate"]["passed"] is True and parity["max_rel_diff"] <= 1e-4 and parity["samples"] == 8

    manifest = json.loads((out / "manifest.json").read_text())
    hints = manifest["extra"]["openvino"]
    assert hints["device"] == "CPU" and hints["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert hints["config"]["PERFORMANCE_HINT"] == "LATENCY" and hints["weights_fp16"] is False
    assert run_cli("verify", out).returncode == 0

    # The IR carries the model's metadata and runs here like the ONNX model.
    model = ov.Core().read_model(str(out / "model.xml"))
    assert json.loads(model.get_rt_info(["medge", "task"]).astype(str)) == "multilabel-classification"
    assert _ir_vs_onnx(out / "model.xml", tiny_onnx, (1, 1, 64, 64)) < 1e-4


def test_npu_gets_static_fp16_ir_from_a_dynamic_model(run_cli, tiny_onnx_dynamic, tmp_path):
    import openvino as ov

    out = tmp_path / "npu"
    res = compile_cli(run_cli, tiny_onnx_dynamic, "intel-npu", out, "--precision", "fp16")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["runtime_device"] == "NPU"
    assert rep["preflight"]["ok"] and rep["preflight"]["checker"].startswith("static table for the OpenVINO NPU")
    assert rep["gate"]["passed"] is True and rep["gate"]["parity"]["max_rel_diff"] <= 2e-2
    model = ov.Core().read_model(str(out / "model.xml"))
    assert [list(p.get_partial_shape().to_shape()) for p in model.inputs] == [[1, 1, 64, 64]]
    weights = [op for op in model.get_ordered_ops() if op.get_type_name() == "Constant" and op.get_output_element_type(0).get_type_name() == "f16"]
    assert weights, "fp16 IR should hold its weights as f16 constants"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["openvino"]["static_shapes"] is True
    assert manifest["extra"]["openvino"]["input_shapes"] == {"image": [1, 1, 64, 64]}
    assert run_cli("verify", out).returncode == 0


def test_npu_rejects_fp32(run_cli, tiny_onnx, tmp_path):
    res = compile_cli(run_cli, tiny_onnx, "intel-npu", tmp_path / "x", "--precision", "fp32")
    assert_one_line_error(res, "intel-npu", "fp16")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_int8_ir_with_gate_on_intel_cpu(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "int8"
    res = compile_cli(run_cli, tiny_onnx, "intel-cpu", out, "--precision", "int8", *FAST_CALIB,
                   "--eval", "synthetic:cxr", "--max-drop", "0.2", "--option", "eval_samples=100")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["calibration"]["source"] == "synthetic:cxr" and rep["evaluation"]["source"] == "synthetic:cxr"
    gate = rep["gate"]
    assert gate["name"] == "auroc" and gate["passed"] is True and gate["max_drop"] == 0.2
    assert gate["parity"]["min_cosine"] >= 0.98
    import openvino as ov

    model = ov.Core().read_model(str(out / "model.xml"))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    assert run_cli("verify", out).returncode == 0


@pytest.mark.slow
def test_zoo_model_default_precision_for_igpu(run_cli, tmp_path):
    onnx_path = tmp_path / "frame.onnx"
    export_zoo(run_cli, "us-frame-screen", onnx_path)
    out = tmp_path / "igpu"
    res = compile_cli(run_cli, onnx_path, "intel-igpu", out)
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["precision"] == "fp16" and rep["runtime_device"] == "GPU"
    assert rep["preflight"]["checker"].startswith("static table for the OpenVINO GPU")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["openvino"]["config"]["INFERENCE_PRECISION_HINT"] == "f16"
    assert _ir_vs_onnx(out / "model.xml", onnx_path, (1, 1, 128, 128)) < 1e-2
