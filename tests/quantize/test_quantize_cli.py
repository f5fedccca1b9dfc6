"""`medge quantize` through the real CLI on ONNX Runtime and OpenVINO, with tiny real models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from medge.common.metadata import read_metadata

from quant_fixtures import export_tiny, write_npz


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """plain and outlier models, each with disjoint calibration and evaluation .npz files."""
    root = tmp_path_factory.mktemp("models")
    paths: dict[str, Path] = {}
    for name, outlier in (("plain", 0.0), ("outlier", 1e4)):
        model = export_tiny(root / f"{name}.onnx", outlier=outlier)
        paths[name] = model
        paths[f"{name}_calib"] = write_npz(model, root / f"{name}_calib.npz", 32, seed=1)
        paths[f"{name}_eval"] = write_npz(model, root / f"{name}_eval.npz", 64, seed=2)
    return paths


def _run_model(path: Path, x: np.ndarray, emulate_qdq: bool = False) -> np.ndarray:
    so = ort.SessionOptions()
    if emulate_qdq:  # Q/DQ as written, in float: what TensorRT computes, on any host CPU
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    return sess.run(None, {inp.name: x.astype(dtype)})[0]


def _max_error_vs_fp32(quantized: Path, fp32: Path, eval_npz: Path, n: int = 16,
                      emulate_qdq: bool = False) -> tuple[float, float]:
    """(max |quantized − FP32| output, spread (std) of the FP32 outputs) over `n` evaluation inputs, run by ORT.

    Also asserts that the quantized outputs follow the FP32 ones across inputs (Pearson r > 0.95):
    a collapsed model gives near-constant outputs (r ≈ 0, error ≈ the spread).
    """
    xs = np.load(eval_npz)["inputs"][:n]
    ref = np.concatenate([_run_model(fp32, x[None]) for x in xs]).ravel()
    got = np.concatenate([_run_model(quantized, x[None], emulate_qdq) for x in xs]).ravel().astype(np.float32)
    assert ref.std() > 1e-3, "the FP32 outputs do not vary: the check would mean nothing"
    r = float(np.corrcoef(ref, got)[0, 1])
    assert r > 0.95, f"quantized outputs do not track FP32 (r = {r:.3f})"
    return float(np.abs(got - ref).max()), float(ref.std())


def _no_leftovers(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_int8_ort_is_small_gated_and_keeps_metadata(run_cli, models, tmp_path):
    out = tmp_path / "int8.onnx"
    res = run_cli("quantize", models["plain"], "-o", out, "--calib", models["plain_calib"],
                  "--eval", models["plain_eval"], "--max-drop", "0.02", report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["precision"] == "int8" and r["backend"] == "ort" and r["output"] == str(out)
    assert r["calibration"]["samples"] == 32 and len(r["calibration"]["sha256"]) == 64
    assert r["size_bytes"]["after"] <= 0.30 * r["size_bytes"]["before"]
    assert r["weight_bytes"]["after"] <= 0.30 * r["weight_bytes"]["before"]
    m = r["metric"]
    assert m["name"] == "auroc" and m["reference"] == pytest.approx(1.0) and m["passed"] is True
    assert m["drop"] <= 0.02 and m["ci95"][0] <= m["drop"] <= m["ci95"][1]
    assert r["fp32_fallback_nodes"] == [] and len(r["attempts"]) == 1
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the output head (Gemm → Mul → Sigmoid) stays FP32: probabilities are not rounded to 8 bits
    assert set(r["output_head_fp32"]) == {"/head/Gemm", "/Mul", "/Sigmoid"}
    producer = {t: n for n in model.graph.node for t in n.output}
    assert producer["prob"].op_type == "Sigmoid"
    meta = read_metadata(out)
    assert meta.model == "tiny-conv" and meta.extra["quantization"]["precision"] == "int8"
    assert meta.extra["quantization"]["calibration_sha256"] == r["calibration"]["sha256"]
    x = np.load(models["plain_eval"])["inputs"][:1]
    assert np.abs(_run_model(out, x) - _run_model(models["plain"], x)).max() < 0.05


def test_trt_compatible_int8_is_symmetric_int8(run_cli, models, tmp_path):
    out = tmp_path / "trt.onnx"
    res = run_cli("quantize", models["plain"], "-o", out, "--calib", models["plain_calib"], "--trt", report=True)
    assert res.returncode == 0, res.stderr
    model = onnx.load(str(out))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits]
    assert zero_points
    # TensorRT explicit quantization: int8 everywhere (biases stay float), all zero points 0
    assert all(z.dtype == np.int8 for z in zero_points)
    assert all(not z.any() for z in zero_points)
    assert model.opset_import[0].version >= 13
    # and it still computes the model: the symmetric Q/DQ graph, emulated as TensorRT computes it, is
    # close to FP32 (ORT's own int8 kernels saturate on AVX2 hosts without VNNI: ~0.7 × spread there)
    err, spread = _max_error_vs_fp32(out, models["plain"], models["plain_eval"], emulate_qdq=True)
    assert err < 0.1 * spread, (err, spread)  # measured ≈ 0.01 × spread; a collapsed model ≈ 1 ×


def test_fp16_keeps_io_fp32_unless_asked(run_cli, models, tmp_path):
    out = tmp_path / "fp16.onnx"
    res = run_cli("quantize", models["plain"], "-o", out, "--precision", "fp16",
                  "--eval", models["plain_eval"], "--max-drop", "0.01", report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["metric"]["passed"] is True
    assert 0.4 < res.report["size_ratio"] < 0.6
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    out_io = tmp_path / "fp16io.onnx"
    res = run_cli("quantize", models["plain"], "-o", out_io, "--precision", "fp16", "--fp16-io", report=True)
    assert res.returncode == 0, res.stderr
    assert onnx.load(str(out_io)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_int8_dynamic_warns_on_conv_model(run_cli, models, tmp_path):
    out = tmp_path / "dyn.onnx"
    res = run_cli("quantize", models["plain"], "-o", out, "--precision", "int8-dynamic", report=True)
    assert res.returncode == 0, res.stderr
    assert any("slower" in w for w in res.report["warnings"])
    assert "ConvInteger" in {n.op_type for n in onnx.load(str(out)).graph.node}
    err, spread = _max_error_vs_fp32(out, models["plain"], models["plain_eval"])  # ORT runs ConvInteger
    assert err < 0.1 * spread, (err, spread)  # measured ≈ 0.02 × spread


def test_gate_failure_is_recovered_with_16bit_activations(run_cli, models, tmp_path):
    out = tmp_path / "a16.onnx"
    res = run_cli("quantize", models["outlier"], "-o", out, "--calib", models["outlier_calib"],
                  "--eval", models["outlier_eval"], "--max-drop", "0.01", report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["attempts"][0]["passed"] is False and r["attempts"][0]["gate"]["drop"] > 0.1
    assert r["metric"]["passed"] is True and r["metric"]["drop"] <= 0.01
    # the one damaged tensor goes to 16 bits; every weight stays int8, so the file stays small
    assert r["int16_activation_tensors"] == ["/Relu_output_0"] and r["fp32_fallback_nodes"] == []
    assert r["size_bytes"]["after"] <= 0.30 * r["size_bytes"]["before"]
    assert any("16 bits" in w for w in r["warnings"])
    model = onnx.load(str(out))
    types = {i.data_type for i in model.graph.initializer}
    assert onnx.TensorProto.UINT16 in types and onnx.TensorProto.UINT8 in types and onnx.TensorProto.INT8 in types
    assert read_metadata(out).extra["quantization"]["int16_activation_tensors"] == ["/Relu_output_0"]
    x = np.load(models["outlier_eval"])["inputs"][:1]
    assert np.abs(_run_model(out, x) - _run_model(models["outlier"], x)).max() < 0.05


def test_gate_failure_is_recovered_by_fp32_fallback(run_cli, models, tmp_path):
    out = tmp_path / "recovered.onnx"
    res = run_cli("quantize", models["outlier"], "-o", out, "--calib", models["outlier_calib"],
                  "--eval", models["outlier_eval"], "--max-drop", "0.01", "--no-int16-fallback", report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["attempts"][0]["passed"] is False and r["attempts"][0]["gate"]["drop"] > 0.1
    assert r["metric"]["passed"] is True and r["metric"]["drop"] <= 0.01
    assert r["int16_activation_tensors"] == [] and r["options"]["int16_fallback"] is False
    # the outlier tensor sits between conv1 and conv2: both must leave INT8, nothing else need
    assert set(r["fp32_fallback_nodes"]) == {"/conv1/Conv", "/conv2/Conv"}
    assert r["sensitivity"][0]["tensor"] == "/Relu_output_0"
    assert read_metadata(out).extra["quantization"]["fp32_fallback_nodes"] == r["fp32_fallback_nodes"]
    assert r["size_bytes"]["after"] < r["size_bytes"]["before"]


@pytest.mark.parametrize("extra", [["--max-drop", "0", "--max-fallback-steps", "0"],
                                   ["--max-drop", "0.01", "--max-fallback-steps", "0"]],
                         ids=["zero-drop-no-budget", "no-fallback-budget"])
def test_unrecoverable_gate_fails_and_writes_nothing(run_cli, models, tmp_path, extra):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "never.onnx"
    res = run_cli("quantize", models["outlier"], "-o", out, "--calib", models["outlier_calib"],
                  "--eval", models["outlier_eval"], *extra, report=True)
    assert res.returncode == 1
    error = res.stderr.strip().splitlines()
    assert len(error) == 1 and "gate failed" in error[0] and "nothing written" in error[0]
    assert not out.exists()
    _no_leftovers(out_dir)
    r = res.report
    assert r["output"] is None and r["metric"]["passed"] is False
    assert all(a["passed"] is False for a in r["attempts"])
    budget = int(extra[-1])
    # the full INT8 try, then per stage one attempt per step: 16-bit activations, then FP32 nodes
    assert len(r["attempts"]) == 1 + 2 * budget
    if budget:  # each stage grows its set 1 → 2, ranked worst first; FP32 keeps the 16-bit tensors
        a = r["attempts"]
        assert a[1]["int16_tensors"] == ["/Relu_output_0"] and len(a[2]["int16_tensors"]) == 2
        assert a[1]["fp32_nodes"] == a[2]["fp32_nodes"] == []
        assert len(a[4]["fp32_nodes"]) > len(a[3]["fp32_nodes"]) > 0 and a[4]["int16_tensors"] == a[2]["int16_tensors"]
        assert r["sensitivity"][0]["tensor"] == "/Relu_output_0"
        assert "16 bits" in error[0]


@pytest.mark.slow
def test_openvino_int8_recovers_and_writes_ir(run_cli, models, tmp_path):
    out = tmp_path / "ov" / "model.xml"
    res = run_cli("quantize", models["outlier"], "-o", out, "--backend", "openvino",
                  "--calib", models["outlier_calib"], "--eval", models["outlier_eval"], "--max-drop", "0.01",
                  report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert out.exists() and out.with_suffix(".bin").exists()
    assert r["attempts"][0]["passed"] is False and r["metric"]["passed"] is True
    # a conv net: NNCF's MIXED preset (asymmetric activations) is tried whole first; the outlier
    # channel survives it, so node fallback follows, from the better of the two schemes
    assert r["attempts"][1]["scheme"] == "mixed" and r["attempts"][1]["fp32_nodes"] == []
    assert r["attempts"][1]["passed"] is False
    assert set(r["fp32_fallback_nodes"]) == {"/conv1/Conv", "/conv2/Conv"}
    # the IR really holds those two in float, besides the output head (FP32 by default), and no other
    assert "/head/Gemm" in r["output_head_fp32"]
    assert {n.split("/WithoutBiases")[0] for n in r["float_compute_ops"]} == {"/conv1/Conv", "/conv2/Conv", "/head/Gemm"}
    import openvino as ov

    model = ov.Core().read_model(str(out))
    assert model.get_rt_info(["medge", "model"]).astype(str) == '"tiny-outlier"'
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


@pytest.mark.parametrize("args, code, needle", [
    (["--precision", "int8"], 2, "--calib"),
    (["--precision", "fp16", "--max-drop", "0.1"], 2, "--eval"),
    (["--precision", "fp16", "--backend", "openvino"], 2, ".xml"),
    (["--precision", "fp16", "--eval", "EVAL", "--metric", "dise"], 1, "did you mean 'dice'"),
    (["--precision", "int8-dynamic", "--backend", "openvino", "-o", "x.xml"], 2, "does not do int8-dynamic"),
])
def test_bad_requests_are_one_line_errors(run_cli, models, tmp_path, args, code, needle):
    args = [str(models["plain_eval"]) if a == "EVAL" else a for a in args]
    out = ["-o", str(tmp_path / "x.onnx")] if "-o" not in args else []
    res = run_cli("quantize", models["plain"], *out, *args)
    assert res.returncode == code
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_inc_pt2e_int8_from_the_pytorch_model(run_cli, models, tmp_path, monkeypatch):
    pytest.importorskip("neural_compressor", reason="neural-compressor-pt (medge[inc]) is not installed")
    from medge.common.metadata import embed_metadata

    model = onnx.load(str(models["plain"]))
    meta = read_metadata(model)
    meta.model = "quant_fixtures:ConvClassifier"  # rebuilt by medge.export.load_model (seed 0 = same weights)
    embed_metadata(model, meta)
    src = tmp_path / "factory.onnx"
    onnx.save(model, str(src))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "inc.onnx"
    res = run_cli("quantize", src, "-o", out, "--backend", "inc", "--calib", models["plain_calib"],
                  "--eval", models["plain_eval"], "--max-drop", "0.02", report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["backend"] == "inc" and r["metric"]["passed"] is True
    assert r["size_bytes"]["after"] < 0.4 * r["size_bytes"]["before"]
    q = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.INT8 for i in q.graph.initializer)
    assert read_metadata(q).extra["quantization"]["backend"] == "inc"
    err, spread = _max_error_vs_fp32(out, models["plain"], models["plain_eval"])  # ORT runs the INC Q/DQ graph
    assert err < 0.5 * spread, (err, spread)  # ≈ 0.2 × spread: INC also rounds the sigmoid output to 8 bits


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_of_a_masked_model_is_a_one_line_error(run_cli, models, tmp_path, method):
    """ORT's histogram calibrators cannot bin the -inf of a mask; the user is told to use minmax, which works."""
    from fixtures.cli_checks import assert_one_line_error

    masked = export_tiny(tmp_path / "masked.onnx", masked=True)
    out = tmp_path / "q.onnx"
    assert_one_line_error(run_cli("quantize", masked, "-o", out, "--calib", models["plain_calib"],
                                  "--calib-method", method, "--backend", "ort"), "--calib-method minmax")
    assert not out.exists()
    res = run_cli("quantize", masked, "-o", out, "--calib", models["plain_calib"], "--backend", "ort", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.exists()

