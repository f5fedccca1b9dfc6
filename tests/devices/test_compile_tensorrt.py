"""`medge compile` for every Jetson target through the real CLI, then `medge verify`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from medge.devices import TARGETS, get_target
from device_checks import FAST_CALIB, compile_cli, export_zoo

JETSONS = [n for n in TARGETS.names() if get_target(n).family == "jetson"]
INT8_JETSONS = [n for n in JETSONS if "int8" in get_target(n).precisions]
FAST_GATE = ("--eval", "synthetic:cxr", "--option", "eval_samples=48")



def _script_flags(bundle):
    text = (bundle / "build_engine.sh").read_text()
    return [line.strip().rstrip("\\").strip() for line in text.splitlines() if line.strip().startswith("--")]


@pytest.mark.parametrize("target", JETSONS)
def test_fp16_bundle_for_each_jetson(run_cli, tiny_onnx, tmp_path, target):
    profile = get_target(target)
    out = tmp_path / "bundle"
    res = compile_cli(run_cli, tiny_onnx, target, out, "--precision", "fp16")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["written"] and rep["precision"] == "fp16" and rep["primary_artifact"] == "model.onnx"
    assert rep["preflight"]["ok"] and rep["preflight"]["table"] == profile.supported_ops
    assert set(rep["files"]) == {"model.onnx", "engine_config.json", "build_engine.sh", "build_engine.py", "README.txt"} | {"reference/inputs.npz", "reference/outputs.npz"}

    flags = _script_flags(out)
    opts = profile.compile_options
    version = tuple(int(p) for p in profile.toolkit.version.split("."))
    assert "--onnx=model.onnx" in flags and "--saveEngine=device/model.engine" in flags and "--fp16" in flags
    assert "--stronglyTyped" not in flags and "--int8" not in flags
    assert f"--timingCacheFile=device/{opts['timing_cache']}" in flags
    if version >= (10, 0):
        assert f"--memPoolSize=workspace:{opts['workspace_mb']}M" in flags
    elif version >= (8, 4):
        assert f"--memPoolSize=workspace:{opts['workspace_mb']}" in flags
    else:
        assert f"--workspace={opts['workspace_mb']}" in flags
    level = [f for f in flags if f.startswith("--builderOptimizationLevel")]
    assert level == ([f"--builderOptimizationLevel={opts['builder_optimization_level']}"] if version >= (8, 6) else [])
    if profile.uses_dla:
        assert f"--useDLACore={opts['dla_core']}" in flags and "--allowGPUFallback" in flags
    else:
        assert not any(f.startswith("--useDLACore") for f in flags)
    assert not any(f.startswith("--minShapes") for f in flags)  # static model → static engine

    syntax = subprocess.run(["bash", "-n", str(out / "build_engine.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["profile"]["name"] == target
    assert manifest["toolchain"]["tensorrt_expected"] == profile.toolkit.version
    assert any("not portable" in n for n in manifest["notes"])
    assert "not portable" in (out / "README.txt").read_text()
    assert manifest["source_model"]["metadata"]["task"] == "multilabel-classification"
    assert manifest["command"].startswith("medge compile")

    ver = run_cli("verify", out, report=True)
    assert ver.returncode == 0, ver.stderr
    assert ver.report["verified"] and ver.report["checked"] == 7 and ver.report["target"] == target


def test_dynamic_batch_uses_profile_shapes(run_cli, tiny_onnx_dynamic, tmp_path):
    out = tmp_path / "dyn"
    res = compile_cli(run_cli, tiny_onnx_dynamic, "jetson-agx-orin", out, "--option", "max_batch=32")
    assert res.returncode == 0, res.stderr
    flags = _script_flags(out)
    opts = get_target("jetson-agx-orin").compile_options
    assert f"--minShapes=image:{opts['min_batch']}x1x64x64" in flags
    assert f"--optShapes=image:{opts['opt_batch']}x1x64x64" in flags
    assert "--maxShapes=image:32x1x64x64" in flags  # user override
    cfg = json.loads((out / "engine_config.json").read_text())
    assert cfg["inputs"] == [{"name": "image", "min": [1, 1, 64, 64], "opt": [4, 1, 64, 64], "max": [32, 1, 64, 64]}]
    # DLA engines get one static batch even from a dynamic model.
    dla = tmp_path / "dla"
    assert compile_cli(run_cli, tiny_onnx_dynamic, "jetson-agx-orin-dla", dla, "--precision", "fp16").returncode == 0
    assert not any(f.startswith("--minShapes") for f in _script_flags(dla))


def test_build_engine_py_runs_without_tensorrt(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "b"
    assert compile_cli(run_cli, tiny_onnx, "jetson-orin-nx", out).returncode == 0
    help_ = subprocess.run([sys.executable, str(out / "build_engine.py"), "--help"], capture_output=True, text=True)
    assert help_.returncode == 0 and "--output" in help_.stdout
    build = subprocess.run([sys.executable, str(out / "build_engine.py")], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 3
    assert "'tensorrt' Python package is not installed" in build.stderr and "TensorRT 10.3" in build.stderr
    # build_engine.sh without trtexec fails with a clear message, too.
    sh = subprocess.run(["bash", str(out / "build_engine.sh")], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert sh.returncode == 3 and "trtexec not found" in sh.stderr


FAST_INT8 = ("jetson-orin-nano",)  # ORT quantization imports take ~12 s per compile; the rest are slow
TRAINED = "us-frame-screen"  # trained demo weights (AUROC ≈ 0.93): a drop and an output error mean something
TRAINED_GATE = ("--calib", "synthetic:us-frame", "--option", "calib_samples=32",
                "--eval", "synthetic:us-frame", "--option", "eval_samples=150", "--max-drop", "0.03")


def _int8_vs_fp32(int8_onnx, fp32_onnx, n: int = 48):
    """(max |int8 − fp32|, Pearson r across inputs, spread of the FP32 outputs) on eval-split inputs."""
    import onnxruntime as ort

    from medge.calibration import load_data_for_onnx

    data = load_data_for_onnx("synthetic:us-frame", fp32_onnx, n=n, split="eval", seed=5)
    emulate = ort.SessionOptions()  # the Q/DQ graph as written, in float: what TensorRT computes on any
    emulate.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # host (AVX2 int8 kernels saturate)
    ref = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(int8_onnx), emulate, providers=["CPUExecutionProvider"])
    r = np.concatenate([ref.run(None, feeds)[0].ravel() for feeds in data])
    q = np.concatenate([got.run(None, feeds)[0].ravel() for feeds in data])
    return float(np.abs(r - q).max()), float(np.corrcoef(r, q)[0, 1]), float(r.std())


@pytest.mark.parametrize("target", [t if t in FAST_INT8 else pytest.param(t, marks=pytest.mark.slow) for t in INT8_JETSONS])
def test_int8_bundle_is_explicit_qdq(run_cli, zoo_onnx, tmp_path, target):
    import onnx
    from onnx import numpy_helper

    profile = get_target(target)
    fp32 = zoo_onnx(TRAINED, dynamic_batch=False)
    out = tmp_path / "int8"
    res = compile_cli(run_cli, fp32, target, out, "--precision", "int8", *TRAINED_GATE)
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["primary_artifact"] == "model.int8.onnx" and rep["preflight"]["ok"]
    assert rep["calibration"]["source"] == "synthetic:us-frame" and rep["calibration"]["sha256"]
    assert rep["evaluation"]["sha256"] != rep["calibration"]["sha256"]
    gate = rep["gate"]
    assert gate["passed"] is True and gate["max_drop"] == 0.03 and len(gate["ci95"]) == 2
    assert gate["reference"] > 0.85 and gate["drop"] <= 0.03  # a trained model's AUROC, kept by INT8
    parity = gate["parity"]  # the stored Q/DQ-vs-FP32 check on calibration samples
    assert parity["samples"] == 8 and parity["min_cosine"] >= 0.95 and parity["max_abs_diff"] < 0.1
    # Run the bundle's Q/DQ model: its probabilities track FP32 on unseen inputs (a collapsed INT8
    # model gives near-constant outputs: r ≈ 0, error ≈ the spread).
    err, r, spread = _int8_vs_fp32(out / "model.int8.onnx", fp32)
    assert spread > 0.1, spread  # the inputs really move the trained model's output
    assert err < 0.1 and r > 0.98, (err, r)
    model = onnx.load(str(out / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq, "no Q/DQ nodes"
    for node in qdq:  # symmetric int8: TensorRT rejects non-zero zero points and uint8
        zp = inits[node.input[2]]
        assert str(zp.dtype) == "int8" and not zp.any(), node.name
    flags = _script_flags(out)
    assert "--onnx=model.int8.onnx" in flags
    version = tuple(int(p) for p in profile.toolkit.version.split("."))
    if version >= (10, 0) and not profile.uses_dla:
        assert "--stronglyTyped" in flags and "--int8" not in flags and "--fp16" not in flags
    else:
        assert "--int8" in flags and "--fp16" in flags and "--stronglyTyped" not in flags
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["sha256"] == rep["calibration"]["sha256"] and manifest["gate"] == gate
    assert run_cli("verify", out).returncode == 0


def test_int8_default_calibration_must_be_named(run_cli, tiny_onnx, tmp_path):
    # tiny-cxr is not a zoo model, so there is no synthetic default: the user must pass --calib.
    res = run_cli("compile", tiny_onnx, "--target", "jetson-orin-nano", "-o", tmp_path / "x", "--precision", "int8")
    assert res.returncode == 2 and "--calib" in res.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_engine_with_tensorrt(run_cli, tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt", reason="the tensorrt package is not installed (no NVIDIA GPU on this machine)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("tensorrt imports but no CUDA GPU is visible")
    out = tmp_path / "engine"
    res = compile_cli(run_cli, tiny_onnx, "jetson-orin-nano", out, "--build-engine")
    assert res.returncode == 0, res.stderr
    assert res.report["primary_artifact"] == "model.engine" and (out / "model.engine").stat().st_size > 0
    assert run_cli("verify", out).returncode == 0


@pytest.mark.slow
def test_failed_gate_writes_nothing(tiny_onnx, tmp_path):
    # An impossible gate (max drop -1) can no longer be typed (the CLI rejects a negative --max-drop),
    # so it is set through the API that the CLI calls.
    from medge.devices.compile import CompileConfig, compile_model
    from medge.common.errors import GateFailedError

    out = tmp_path / "gated"
    config = CompileConfig(model=tiny_onnx, target="jetson-orin-nano", output=out, precision="int8",
                           calib_source="synthetic:cxr", eval_source="synthetic:cxr", max_drop=-1.0,
                           options={"calib_samples": 16, "eval_samples": 48})
    with pytest.raises(GateFailedError, match="gate failed") as failed:
        compile_model(config)
    assert failed.value.report.written is False and failed.value.report.gate["passed"] is False
    assert not out.exists()


def test_negative_max_drop_is_refused_before_any_work(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "gated"
    res = compile_cli(run_cli, tiny_onnx, "jetson-orin-nano", out, "--precision", "int8", *FAST_CALIB, *FAST_GATE,
                      "--max-drop", "-1")
    assert res.returncode == 2 and "--max-drop" in res.stderr and "0 or more" in res.stderr
    assert res.report["ok"] is False
    assert not out.exists()


def test_int8_engine_flags_per_toolkit(tiny_onnx_dynamic, tmp_path):
    """Precision flags by TensorRT version and device, and the strongly_typed override (no quantization run)."""
    from medge.devices.recipes import CompileContext
    from medge.devices.recipes.tensorrt import engine_config, trtexec_args
    from medge.common.metadata import read_metadata

    def flags(target, precision="int8", **overrides):
        profile = get_target(target)
        ctx = CompileContext(onnx_path=tiny_onnx_dynamic, meta=read_metadata(tiny_onnx_dynamic), target=profile,
                             precision=precision, calib_source=None, eval_source=None, max_drop=None,
                             out_dir=tmp_path, work_dir=tmp_path, options=profile.options(overrides))
        return trtexec_args(engine_config(ctx, "model.int8.onnx"))

    orin = flags("jetson-orin-nano")
    assert "--stronglyTyped" in orin and "--int8" not in orin
    assert "--minShapes=image:1x1x64x64" in orin and "--maxShapes=image:4x1x64x64" in orin
    weak = flags("jetson-orin-nano", strongly_typed=False)
    assert "--stronglyTyped" not in weak and {"--int8", "--fp16"} <= set(weak)
    xavier = flags("jetson-xavier-nx")
    assert {"--int8", "--fp16", "--memPoolSize=workspace:1024"} <= set(xavier)
    assert not any(f.startswith("--builderOptimizationLevel") for f in xavier)
    dla = flags("jetson-agx-orin-dla", dla_core=1)
    assert {"--int8", "--fp16", "--useDLACore=1", "--allowGPUFallback"} <= set(dla)
    assert not any(f.startswith("--minShapes") for f in dla)  # static batch on the DLA
    nano = flags("jetson-nano", precision="fp16")
    assert "--workspace=512" in nano and "--int8" not in nano


@pytest.mark.slow
def test_zoo_model_int8_defaults_to_its_synthetic_data(run_cli, tmp_path):
    onnx_path = tmp_path / "us.onnx"
    export_zoo(run_cli, "us-frame-screen", onnx_path)
    out = tmp_path / "us"
    res = compile_cli(run_cli, onnx_path, "jetson-agx-orin-dla", out, "--option", "calib_samples=32")
    assert res.returncode == 0, res.stderr
    rep = res.report
    assert rep["precision"] == "int8"  # the DLA target's default
    assert rep["calibration"]["source"] == "synthetic:us-frame" and rep["calibration"]["n"] == 32
    assert any("calibrated on synthetic:us-frame" in n for n in rep["notes"])
    assert rep["preflight"]["device"] == "DLA" and rep["preflight"]["ok"]
    assert run_cli("verify", out).returncode == 0


@pytest.mark.slow
def test_int8_qdq_that_drifts_from_fp32_is_refused_without_a_metric_gate(run_cli, tmp_path):
    # symmetric int8 activations bend the 12-lead reconstruction (min cosine ≈ 0.92 vs FP32, worst
    # lead RMS error ≈ 47 % of its RMS, above the shared INT8_MAX_CHANNEL_ERROR)
    onnx_path = export_zoo(run_cli, "ecg-3to12", tmp_path / "ecg.onnx")
    out = tmp_path / "ecg-jetson"
    res = compile_cli(run_cli, onnx_path, "jetson-orin-nano", out, "--precision", "int8", "--option", "calib_samples=64")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("medge: error:")]
    assert len(errors) == 1 and "fails its gate" in errors[0] and "parity vs FP32" in errors[0] and "--eval" in errors[0]
    assert not out.exists()
    parity = res.report["gate"]["parity"]
    assert res.report["written"] is False and parity["passed"] is False and parity["min_cosine"] < 0.95
    assert parity["max_channel_rms_error"] > parity["max_channel_rms_error_allowed"]
