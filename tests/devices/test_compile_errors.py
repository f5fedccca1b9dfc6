"""Requests are validated before any work; a failing compile never leaves a bundle at -o."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper


def _unsupported_model(path, meta):
    """A graph with an op TensorRT cannot parse (Unique), carrying medge metadata."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 64, 64])
    y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Relu", ["image"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Unique", ["f"], ["probs"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    from medge.common.metadata import embed_metadata

    embed_metadata(model, meta)
    onnx.save(model, str(path))
    return path


def _no_leftovers(parent, name):
    return not any(p.name.startswith(f".{name}.") for p in parent.iterdir())


def test_failing_preflight_leaves_no_bundle(run_cli, tmp_path, medge_meta):
    model = _unsupported_model(tmp_path / "bad.onnx", medge_meta)
    out = tmp_path / "out"
    res = run_cli("compile", model, "--target", "jetson-orin-nano", "-o", out, report=True)
    assert res.returncode == 1 and "cannot be built by TensorRT 10.3" in res.stderr
    problems = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("medge: [")]  # step lines aside
    assert "Traceback" not in res.stderr and len(problems) == 1
    assert res.report["written"] is False
    assert res.report["preflight"]["unsupported"][0]["op"] == "Unique"
    assert not out.exists() and _no_leftovers(tmp_path, "out")


def test_failing_compile_keeps_the_previous_bundle(run_cli, tiny_onnx, tmp_path, medge_meta):
    out = tmp_path / "out"
    assert run_cli("compile", tiny_onnx, "--target", "jetson-orin-nano", "-o", out).returncode == 0
    before = (out / "manifest.json").read_bytes()
    bad = _unsupported_model(tmp_path / "bad.onnx", medge_meta)
    assert run_cli("compile", bad, "--target", "jetson-orin-nano", "-o", out).returncode == 1
    assert (out / "manifest.json").read_bytes() == before
    assert run_cli("verify", out).returncode == 0 and _no_leftovers(tmp_path, "out")


def test_allow_unsupported_writes_the_bundle_but_fails(run_cli, tmp_path, medge_meta):
    model = _unsupported_model(tmp_path / "bad.onnx", medge_meta)
    out = tmp_path / "out"
    res = run_cli("compile", model, "--target", "jetson-orin-nano", "-o", out, "--option", "allow_unsupported=true",
                  report=True)
    assert res.returncode == 1 and res.report["written"] is True  # bundle for inspection; report not ok
    assert run_cli("verify", out).returncode == 0


def test_request_validation_errors(run_cli, tiny_onnx, tmp_path):
    out = tmp_path / "out"
    cases = [
        (("--target", "jetson-nano", "--precision", "int8"), 1, "supported precisions: fp32, fp16"),
        (("--target", "jetson-agx-orin-dla", "--precision", "fp32"), 1, "does not support fp32"),
        (("--target", "jetson-orn-nano"), 1, "did you mean 'jetson-orin-nano'"),
        (("--target", "jetson-orin-nano", "--option", "workspace=64"), 2, "did you mean 'workspace_mb'"),
        (("--target", "jetson-orin-nano", "--option", "novalue"), 2, "KEY=VALUE"),
        (("--target", "jetson-orin-nano", "--max-drop", "0.01"), 2, "--eval"),
        (("--target", "jetson-agx-orin-dla", "--precision", "fp16", "--option", "dla_core=5"), 1, "has 2 DLA cores"),
        (("--target", "jetson-xavier-nx", "--option", "strongly_typed=true"), 1, "strongly_typed needs int8"),
        (("--target", "local", "--build-engine"), 2, "TensorRT targets only"),
        (("--target", "jetson-orin-nano", "--option", "min_batch=8"), 0, ""),  # static model: batch range unused
    ]
    for args, code, message in cases:
        res = run_cli("compile", tiny_onnx, "-o", out, *args)
        assert res.returncode == code and message in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
        assert out.exists() == (code == 0) and _no_leftovers(tmp_path, "out"), args
        if out.exists():
            import shutil

            shutil.rmtree(out)


def test_model_errors(run_cli, tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    plain = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    res = run_cli("compile", tmp_path / "plain.onnx", "--target", "local", "-o", tmp_path / "o")
    assert res.returncode == 1 and "no medge metadata" in res.stderr
    res = run_cli("compile", tmp_path / "missing.onnx", "--target", "local", "-o", tmp_path / "o")
    assert res.returncode == 1 and "not found" in res.stderr
    (tmp_path / "garbage.onnx").write_bytes(b"not an onnx file")
    res = run_cli("compile", tmp_path / "garbage.onnx", "--target", "local", "-o", tmp_path / "o")
    assert res.returncode == 1 and "is not a valid ONNX model" in res.stderr and "Traceback" not in res.stderr


def test_refuses_to_overwrite_a_non_bundle(run_cli, tiny_onnx, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data.txt").write_text("keep me")
    res = run_cli("compile", tiny_onnx, "--target", "jetson-orin-nano", "-o", precious)
    assert res.returncode == 2 and "not a medge bundle" in res.stderr
    assert (precious / "data.txt").read_text() == "keep me"


def test_build_engine_needs_tensorrt(run_cli, tiny_onnx, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: test_build_engine_with_tensorrt covers --build-engine")
    out = tmp_path / "out"
    res = run_cli("compile", tiny_onnx, "--target", "jetson-orin-nano", "-o", out, "--build-engine")
    assert res.returncode == 1 and "tensorrt is not installed" in res.stderr and "medge[tensorrt]" in res.stderr
    assert not out.exists()


def test_local_target_runs_here(run_cli, tiny_onnx, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "local"
    res = run_cli("compile", tiny_onnx, "--target", "local", "-o", out, report=True)
    assert res.returncode == 0, res.stderr
    assert res.report["runtime"] == "onnxruntime" and res.report["precision"] == "fp32"
    x = np.random.default_rng(0).random((1, 1, 64, 64), dtype=np.float32)
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"image": x})[0]
    got = ort.InferenceSession(str(out / res.report["primary_artifact"])).run(None, {"image": x})[0]
    np.testing.assert_array_equal(got, ref)
    assert run_cli("verify", out).returncode == 0
