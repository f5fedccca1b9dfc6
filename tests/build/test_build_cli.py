"""`medge build`, the main job, end to end through the real CLI: every step, the summary, the
Markdown/JSON/PNG report and the bundle (rechecked with `medge verify`).

Sample counts and profiling runs are cut down (``--option calib_samples=…``, ``--runs``) so the
builds stay fast; the chain and its decisions are the real ones.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fixtures.cli_checks import assert_one_line_error

TESTS_DIR = Path(__file__).resolve().parents[1]
ZOO_MODEL = "us-frame-screen"  # smallest zoo image model (1×1×128×128, 26 M MACs), trained demo weights
FAST = ("--runs", "5", "--warmup", "1", "--option", "calib_samples=32", "--option", "eval_samples=150")
CHAIN = ["export", "quantize+compile", "compare", "profile fp32 onnx", "profile bundle"]
BUNDLE_BAR = (31, 119, 180)  # the chart's colour for the bundle (#1f77b4)


def _steps(report: dict) -> dict[str, dict]:
    steps = {s["step"]: s for s in report["steps"]}
    names = [s["step"] for s in report["steps"]]
    assert [n for n in names if n in CHAIN] == [n for n in CHAIN if n in steps], names  # chain order kept
    for step in report["steps"]:
        assert step["status"] in ("ok", "skipped", "failed") and step["seconds"] >= 0, step
        if step["status"] == "skipped":
            assert step["note"], step  # every skip says why
    return steps


def _chart_pixels(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 400 and img.height >= 200, (img.format, img.size)
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def _assert_report_files(res) -> dict:
    rep = res.report
    files = rep["report_files"]
    assert set(files) == {"markdown", "json", "chart"}, files
    assert json.loads(Path(files["json"]).read_text()) == rep  # the folder's JSON is the --report JSON
    md = Path(files["markdown"]).read_text()
    for step in rep["steps"]:
        assert f"| {step['step']} | {step['status']} |" in md
    pixels = _chart_pixels(files["chart"])
    assert pixels.std() > 20, "the chart is blank"
    return {"markdown": md, "pixels": pixels}


@pytest.mark.parametrize("target,runtime", [("intel-cpu", "openvino"), ("local", "onnxruntime")])
def test_build_zoo_model(run_cli, tmp_path, target, runtime):
    out = tmp_path / "bundle"
    res = run_cli("build", ZOO_MODEL, "--target", target, "--precision", "int8", "-o", out, "--max-drop", "0.05",
                  *FAST, report=True)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = res.report
    assert rep["model"] == ZOO_MODEL and rep["target"] == target and rep["precision"] == "int8"
    assert rep["bundle"] == str(out)
    steps = _steps(rep)
    assert all(steps[name]["status"] == "ok" for name in CHAIN), rep["steps"]
    assert all(s["status"] in ("ok", "skipped") for s in rep["steps"]), rep["steps"]

    # quantize+compile: INT8 calibrated and gated on the zoo model's synthetic data (disjoint splits)
    comp = rep["compile"]
    assert comp["written"] and comp["runtime"] == runtime and comp["precision"] == "int8"
    assert comp["calibration"]["source"] == "synthetic:us-frame" and comp["calibration"]["n"] == 32
    assert comp["evaluation"]["sha256"] != comp["calibration"]["sha256"]
    gate = comp["gate"]
    assert gate["name"] == "auroc" and gate["passed"] is True and gate["max_drop"] == 0.05

    summary = rep["summary"]
    assert summary["auroc fp32"] == gate["reference"] > 0.8  # trained demo weights, not chance
    assert summary["auroc int8"] == gate["quantized"] and summary["metric drop"] == gate["drop"] <= 0.05
    assert summary["gate passed"] is True
    # compare: the bundle against the FP32 ONNX on the same evaluation inputs
    (compared,) = rep["compare"]["artifacts"]
    assert summary["cosine vs fp32"] == compared["cosine"] >= 0.99
    assert summary["max abs error vs fp32"] == compared["max_abs_error"] < 0.3  # sigmoid probabilities
    # profile: FP32 ONNX then the bundle, both timed here
    fp32, bundle = rep["profiles"]
    assert fp32["runtime"] == "onnxruntime" and bundle["runtime"] == runtime
    assert summary["p50 fp32 onnx (ms)"] == fp32["latency_ms"]["p50"] > 0
    assert summary["p50 bundle (ms)"] == bundle["latency_ms"]["p50"] > 0
    assert summary["speed-up vs fp32 onnx"] == round(fp32["latency_ms"]["p50"] / bundle["latency_ms"]["p50"], 2)
    assert 0.1 < summary["size ratio vs fp32"] < 0.6  # int8 weights: about a quarter, plus graph overhead

    seen = _assert_report_files(res)
    assert "## Summary" in seen["markdown"] and "## Latency (ms)" in seen["markdown"]
    bars = np.all(np.abs(seen["pixels"] - BUNDLE_BAR) <= 6, axis=-1).sum()
    assert bars > 2000, f"the bundle's latency and metric bars are missing ({bars} px)"
    assert (tmp_path / "bundle.report" / "model.fp32.onnx").is_file()

    ver = run_cli("verify", out, report=True)
    assert ver.returncode == 0, ver.stderr
    assert ver.report["verified"] and ver.report["target"] == target
    assert ver.report["checked"] == len(comp["files"]) and not ver.report["modified"]


def test_build_for_jetson_skips_what_cannot_run_here(run_cli, tmp_path):
    out = tmp_path / "jetson"
    res = run_cli("build", ZOO_MODEL, "--target", "jetson-orin-nano", "--precision", "fp16", "-o", out, *FAST,
                  report=True)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = res.report
    steps = _steps(rep)
    assert [steps[n]["status"] for n in CHAIN] == ["ok", "ok", "skipped", "ok", "skipped"], rep["steps"]
    for name in ("compare", "profile bundle"):  # a TensorRT engine needs the device's GPU
        assert "cuda" in steps[name]["note"], steps[name]
    assert f"medge profile {out} --device ssh://" in steps["profile bundle"]["note"]
    assert [p["runtime"] for p in rep["profiles"]] == ["onnxruntime"]
    assert rep["compile"]["written"] and rep["compile"]["primary_artifact"] == "model.onnx"
    assert "p50 bundle (ms)" not in rep["summary"] and "speed-up vs fp32 onnx" not in rep["summary"]
    _assert_report_files(res)
    assert (out / "build_engine.sh").is_file()
    ver = run_cli("verify", out, report=True)
    assert ver.returncode == 0 and ver.report["verified"], ver.stderr


@pytest.fixture
def tests_on_pythonpath(monkeypatch):
    """Let the `medge` subprocess import fixtures.tiny_models (module:factory models)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))


def test_build_whose_int8_gate_fails_writes_no_bundle(run_cli, tmp_path, tests_on_pythonpath):
    # One activation channel ~10⁴× the others: per-tensor int8 scales wipe out the rest of the signal.
    # The parity fallback ladder recovers that (#26), so the gate asks for a cosine no rung reaches.
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).random((16, 1, 64, 64), dtype=np.float32))
    res = run_cli("build", "fixtures.tiny_models:outlier_net", "--input-shape", "1x1x64x64", "--target",
                  "jetson-orin-nano", "--precision", "int8", "--calib", calib, "--min-cosine", "1", *FAST[:4],
                  report=True)
    line = assert_one_line_error(res, "fails its gate", "cosine")
    assert "nothing was written" in line
    bundle = tmp_path / "build" / "outlier_net-jetson-orin-nano"  # default -o: build/<factory>-<target>
    assert res.report["bundle"] == str(Path("build") / bundle.name)
    assert not bundle.exists() and not list(bundle.parent.glob(f".{bundle.name}*"))  # no bundle, no leftovers
    rep = res.report
    steps = _steps(rep)
    assert steps["export"]["status"] == "ok"
    assert steps["quantize+compile"]["status"] == "failed" and "fails its gate" in steps["quantize+compile"]["note"]
    assert not {"compare", "profile fp32 onnx", "profile bundle"} & set(steps)  # nothing ran after the refusal
    parity = rep["compile"]["gate"]["parity"]
    assert rep["compile"]["written"] is False and parity["passed"] is False and parity["min_cosine"] < 1
    assert len(rep["compile"]["gate"]["rungs"]) >= 2 and not rep["compile"]["warnings"]  # 1 is stricter: no WARNING

    assert rep["summary"]["gate passed"] is False and rep["summary"]["gate min cosine vs fp32"] == parity["min_cosine"]
    saved = json.loads((tmp_path / "build" / f"{bundle.name}.report" / "build_report.json").read_text())
    assert saved == rep
