"""`compile` safety and output as a deployment engineer meets them (issue 14): no silent overwrite,
WARNING on synthetic calibration, a short verdict-first summary, verify against the printed sha256,
inspect of bundles and IRs, compare's default limits and the stored reference outputs."""

from __future__ import annotations

import re
import shutil

import onnx
import pytest
from device_checks import compile_cli
from fixtures.cli_checks import assert_one_line_error, run_medge


@pytest.fixture(scope="module")
def intel_bundle(tmp_path_factory, tiny_onnx):
    out = tmp_path_factory.mktemp("intel") / "intel"
    report = out.with_suffix(".json")
    proc = run_medge(["compile", tiny_onnx, "-t", "intel-cpu", "-o", out, "--report", report])
    assert proc.returncode == 0, proc.stderr
    import json

    return out, json.loads(report.read_text()), proc


def test_compile_prints_steps_and_a_short_summary(intel_bundle):
    out, rep, proc = intel_bundle
    steps = re.findall(r"^medge: \[(\d)/3\] ", proc.stderr, re.M)
    assert steps == ["1", "2", "3"]
    rows = proc.stdout.strip().splitlines()[2:]
    assert rows[0].startswith("result") and "PASS" in rows[0] and len(rows) <= 14
    assert rep["ok"] is True and re.fullmatch(r"[0-9a-f]{64}", rep["manifest_sha256"])
    assert any(rep["manifest_sha256"] in row for row in rows)  # what verify --expect-sha256 takes


def test_verify_prints_and_checks_the_manifest_sha256(run_cli, intel_bundle):
    out, rep, _ = intel_bundle
    ok = run_cli("verify", out, "--expect-sha256", rep["manifest_sha256"].upper(), report=True)
    assert ok.returncode == 0 and ok.report["manifest_sha256"] == rep["manifest_sha256"]
    wrong = run_cli("verify", out, "--expect-sha256", "0" * 64, report=True)
    assert wrong.returncode == 1 and not wrong.report["verified"]
    assert any("differs from --expect-sha256" in e for e in wrong.report["errors"])
    assert_one_line_error(run_cli("verify", out, "--expect-sha256", "abc"), "not a sha256", code=2)


def test_inspect_accepts_bundles_and_ir(run_cli, intel_bundle):
    out, rep, _ = intel_bundle
    bundle = run_cli("inspect", out, report=True)
    assert bundle.returncode == 0, bundle.stderr
    assert bundle.report["target"] == "intel-cpu" and bundle.report["manifest_sha256"] == rep["manifest_sha256"]
    assert bundle.report["artifact"]["format"] == "openvino-ir"
    ir = run_cli("inspect", out / "model.xml", report=True)
    assert ir.returncode == 0, ir.stderr
    assert ir.report["metadata"]["model"] == "tiny-cxr" and ir.report["inputs"][0]["shape"] == [1, 1, 64, 64]
    assert "Convolution" in ir.report["op_histogram"]


def test_compare_reference_and_default_limits(run_cli, intel_bundle, tiny_onnx):
    out, _, _ = intel_bundle
    res = run_cli("compare", out, "--reference", report=True)
    assert res.returncode == 0, res.stderr
    (row,) = res.report["artifacts"]
    assert row["passed"] and row["limits"]["from"] == "fp32 defaults" and row["limits"]["min_cosine"] == 0.9999
    assert "limits" in res.stdout and "fp32 defaults" in res.stdout  # the criteria are printed
    assert_one_line_error(run_cli("compare", tiny_onnx, "--reference"), "needs a bundle folder")


def test_compile_refuses_to_replace_another_targets_bundle(run_cli, intel_bundle, tiny_onnx, tmp_path):
    out = tmp_path / "b"
    shutil.copytree(intel_bundle[0], out)
    before = (out / "manifest.json").read_bytes()
    res = run_cli("compile", tiny_onnx, "-t", "jetson-orin-nano", "-o", out, report=True)
    assert_one_line_error(res, "holds a bundle for intel-cpu", "--force", code=2)
    assert res.report["ok"] is False and (out / "manifest.json").read_bytes() == before


def test_compile_refuses_to_drop_device_files(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "jetson"
    assert compile_cli(run_cli, tiny_onnx, "jetson-orin-nano", out).returncode == 0
    (out / "device").mkdir()
    (out / "device" / "timing.cache").write_bytes(b"built on the device")
    res = run_cli("compile", tiny_onnx, "-t", "jetson-orin-nano", "-o", out)
    assert_one_line_error(res, "device/timing.cache", "--force", code=2)
    assert (out / "device" / "timing.cache").exists()
    forced = run_cli("compile", tiny_onnx, "-t", "jetson-orin-nano", "-o", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (out / "device").exists()


def test_int8_on_synthetic_data_warns(run_cli, tiny_onnx, tmp_path):
    from medge.common.metadata import read_metadata, embed_metadata

    meta = read_metadata(tiny_onnx)
    meta.model = "cxr-densenet-tiny"  # a zoo name: compile falls back to its synthetic data
    model = onnx.load(str(tiny_onnx))
    embed_metadata(model, meta)
    zoo_named = tmp_path / "zoo-named.onnx"
    onnx.save(model, str(zoo_named))
    res = run_cli("compile", zoo_named, "-t", "jetson-orin-nano", "--precision", "int8", "--option", "calib_samples=16",
                  "-o", tmp_path / "b", report=True)
    assert res.returncode == 0, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("medge: WARNING:")]
    assert len(warnings) == 1 and "synthetic:cxr" in warnings[0] and "--calib" in warnings[0]
    assert res.report["warnings"] and "synthetic" in res.report["warnings"][0]
    # a model that is not in the zoo needs --calib
    assert_one_line_error(run_cli("compile", tiny_onnx, "-t", "jetson-orin-nano", "--precision", "int8",
                                  "-o", tmp_path / "c"), "--calib", code=2)


def test_failed_compile_summary_is_short(run_cli, tmp_path, medge_meta):
    from onnx import TensorProto, helper

    from medge.common.metadata import embed_metadata

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 64, 64])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Flatten", ["image"], ["f"]), helper.make_node("Unique", ["f"], ["probs"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    embed_metadata(model, medge_meta)
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    res = run_cli("compile", bad, "-t", "jetson-orin-nano", "-o", tmp_path / "out", report=True)
    assert_one_line_error(res, "cannot be built by TensorRT")
    rows = res.stdout.strip().splitlines()[2:]
    assert rows[0].startswith("result") and "FAIL" in rows[0] and len(rows) <= 14
    assert res.report["ok"] is False and "cannot be built" in res.report["error"]
    assert res.report["preflight"]["unsupported"]  # the full lists stay in the JSON


def test_quantize_summary_is_short_and_verdict_first(run_cli, tiny_onnx, tmp_path):
    res = run_cli("quantize", tiny_onnx, "-o", tmp_path / "q.onnx", "--calib", "synthetic:cxr", "--calib-size", "16",
                  report=True)
    assert res.returncode == 0, res.stderr
    rows = res.stdout.strip().splitlines()[2:]
    assert rows[0].startswith("result") and "PASS" in rows[0] and len(rows) <= 12
    assert res.report["ok"] is True and res.report["size_bytes"]["after"] < res.report["size_bytes"]["before"]
    assert_one_line_error(run_cli("quantize", tiny_onnx, "-o", tmp_path, "--calib", "synthetic:cxr"), "is a folder", code=2)
