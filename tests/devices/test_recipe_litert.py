"""`medge compile` for the Android targets (LiteRT .tflite) through the real CLI, run on the LiteRT
interpreter here; plus the delegate op tables and the ONNX→PyTorch path they rely on."""

from __future__ import annotations

import json

import pytest

from medge.devices import TARGETS, get_target
from device_checks import FAST_CALIB, artifact_vs_onnx, compile_cli, export_zoo

ANDROID = [n for n in TARGETS.names() if get_target(n).recipe == "litert"]




def test_every_android_target_uses_this_recipe():
    assert set(ANDROID) == {"android-qualcomm-npu", "android-mediatek-npu", "android-gpu"}


def test_int8_tflite_from_onnx_only_model_for_qualcomm_npu(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "qnn"
    res = compile_cli(run_cli, tiny_onnx, "android-qualcomm-npu", out, "--precision", "int8", *FAST_CALIB)
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["written"] and rep["primary_artifact"] == "model.tflite" and rep["runtime"] == "litert"
    assert rep["runtime_device"] == "NPU" and set(rep["files"]) == {"model.tflite", "README.txt"} | {"reference/inputs.npz", "reference/outputs.npz"}
    assert rep["calibration"]["source"] == "synthetic:cxr" and rep["calibration"]["n"] == 16

    pre = rep["preflight"]
    assert pre["checker"] == "litert-delegate-table" and pre["delegate"] == "qnn" and pre["ok"]
    assert pre["accelerated_ops"] + pre["cpu_ops"] == pre["ops_total"] > 0
    assert {"CONV_2D", "FULLY_CONNECTED", "LOGISTIC"} <= set(pre["supported"])
    assert pre["coverage"] == 1.0 and pre["fallback"] == [] and pre["partitions"] == 1

    gate = rep["gate"]
    assert gate["passed"] is True and gate["parity"]["min_cosine"] >= 0.95

    manifest = json.loads((out / "manifest.json").read_text())
    lit = manifest["extra"]["litert"]
    assert lit["torch_source"]["kind"] == "onnx"  # no --model-ref: the ONNX graph itself was converted
    assert lit["full_integer"] and lit["io_layout"] == "channel_last"
    assert run_cli("verify", out).returncode == 0

    # The real interpreter sees int8 NHWC I/O, and the model still matches the FP32 ONNX model.
    worst, i_info, o_info = artifact_vs_onnx(out / "model.tflite", "litert", tiny_onnx, (1, 1, 64, 64), channel_last=True)
    assert i_info.dtype == "int8" and o_info.dtype == "int8"
    assert i_info.quantization is not None and o_info.quantization is not None
    assert list(i_info.shape) == [1, 64, 64, 1] and list(o_info.shape) == [1, 4]
    assert worst < 0.05
    assert lit["inputs"][0]["dtype"] == "int8" and lit["inputs"][0]["shape"] == [1, 64, 64, 1]
    assert "int8 [1, 64, 64, 1], real = (q - " in (out / "README.txt").read_text()


def test_preflight_splits_npu_and_cpu_ops():
    from medge.devices.delegate_ops import delegate_names, litert_preflight

    assert {"qnn", "neuron", "gpu", "xnnpack"} <= set(delegate_names())
    ops = [
        {"index": 0, "op": "CONV_2D", "input_dtypes": ["int8", "int8", "int32"], "output_dtypes": ["int8"], "max_rank": 4},
        {"index": 1, "op": "CONV_2D", "input_dtypes": ["float32", "float32"], "output_dtypes": ["float32"], "max_rank": 4},
        {"index": 2, "op": "CUMSUM", "input_dtypes": ["int8"], "output_dtypes": ["int8"], "max_rank": 2},
        {"index": 3, "op": "ADD", "input_dtypes": ["int8", "int8"], "output_dtypes": ["int8"], "max_rank": 4},
        {"index": 4, "op": "ADD", "input_dtypes": ["int8", "int8"], "output_dtypes": ["int8"], "max_rank": 6},
    ]
    pre = litert_preflight(ops, "qnn")
    assert pre["supported"] == {"ADD": 1, "CONV_2D": 1} and pre["accelerated_ops"] == 2 and pre["cpu_ops"] == 3
    assert [f["index"] for f in pre["fallback"]] == [1, 2, 4] and pre["partitions"] == 2
    assert "float32" in pre["fallback"][0]["reason"] and "not supported" in pre["fallback"][1]["reason"]
    assert "rank-6" in pre["fallback"][2]["reason"] and pre["ok"] and pre["coverage"] == 0.4
    # In the delegate's fp16 mode the float conv runs on the NPU; the GPU takes no int8 kernels at all.
    assert litert_preflight(ops, "qnn", float_as_fp16=True)["accelerated_ops"] == 3
    gpu = litert_preflight(ops, "gpu")
    assert gpu["accelerated_ops"] == 1 and gpu["ok"]


def test_onnx_to_torch_names_unsupported_ops(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from medge.devices.recipes.litert.onnx_to_torch import onnx_to_torch
    from medge.common.errors import ExportError

    graph = helper.make_graph(
        [helper.make_node("Round", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    path = tmp_path / "round.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ExportError, match="Round"):
        onnx_to_torch(path)


@pytest.mark.slow
def test_fp16_tflite_for_android_gpu(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "gpu"
    res = compile_cli(run_cli, tiny_onnx, "android-gpu", out)
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["precision"] == "fp16" and rep["runtime_device"] == "GPU" and rep["calibration"] is None
    pre = rep["preflight"]
    assert pre["delegate"] == "gpu" and pre["ok"] and "DEQUANTIZE" in pre["supported"]  # fp16 weights
    assert rep["gate"]["passed"] is True and rep["gate"]["parity"]["max_rel_diff"] <= 2e-2
    worst, i_info, o_info = artifact_vs_onnx(out / "model.tflite", "litert", tiny_onnx, (1, 1, 64, 64), channel_last=True)
    assert i_info.dtype == "float32" and o_info.dtype == "float32" and worst < 1e-2
    assert run_cli("verify", out).returncode == 0


@pytest.mark.slow
def test_zoo_model_ref_int8_for_mediatek_with_metric_gate(run_cli, tmp_path):
    onnx_path = tmp_path / "cxr.onnx"
    export_zoo(run_cli, "cxr-densenet-tiny", onnx_path)
    out = tmp_path / "apu"
    res = compile_cli(run_cli, onnx_path, "android-mediatek-npu", out, "--model-ref", "cxr-densenet-tiny",
                   "--option", "calib_samples=16", "--option", "eval_samples=60",
                   "--eval", "synthetic:cxr", "--max-drop", "0.1")
    assert res.returncode == 0, res.stderr
    rep = res.report
    gate = rep["gate"]
    assert gate["kind"] == "metric" and gate["name"] == "auroc" and gate["passed"] is True
    assert gate["drop"] <= 0.1 and len(gate["ci95"]) == 2 and gate["n_eval"] > 0
    assert rep["evaluation"]["source"] == "synthetic:cxr"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["litert"]["torch_source"] == {"kind": "model_ref", "reference": "cxr-densenet-tiny"}
    assert manifest["extra"]["litert"]["inputs"][0]["dtype"] == "int8"
    assert rep["preflight"]["delegate"] == "neuron" and rep["preflight"]["ok"]


@pytest.mark.slow
def test_failed_metric_gate_writes_nothing(tiny_onnx, tmp_path):
    # An impossible gate (max drop -1) can no longer be typed (the CLI rejects a negative --max-drop),
    # so it is set through the API that the CLI calls.
    from medge.devices.compile import CompileConfig, compile_model
    from medge.common.errors import GateFailedError

    out = tmp_path / "fail"
    config = CompileConfig(model=tiny_onnx, target="android-qualcomm-npu", output=out, calib_source="synthetic:cxr",
                           eval_source="synthetic:cxr", max_drop=-1.0, options={"calib_samples": 16, "eval_samples": 50})
    with pytest.raises(GateFailedError, match="max drop"):
        compile_model(config)
    assert not out.exists()
