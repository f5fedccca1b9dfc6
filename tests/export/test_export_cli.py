"""`medge export` / `medge inspect` through the real CLI on tiny fixture models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import save_file

from fixtures.cli_checks import assert_one_line_error
from medge.common.metadata import read_metadata

TINY = "fixtures.tiny_models:tiny_conv"


def test_export_is_deterministic_and_inspectable(run_cli, tmp_path, tiny_models):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    args = ["--input-shape", "1x1x32x32", "--dynamic-batch", "--task", "multilabel-classification",
            "--labels", "effusion,nodule,mass"]
    first = run_cli("export", TINY, "-o", a, *args, report=True)
    second = run_cli("export", TINY, "-o", b, *args, report=True)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
    assert a.read_bytes() == b.read_bytes()
    assert first.report["sha256"] == second.report["sha256"]

    rep = first.report
    assert rep["exporter"] == "torchscript" and rep["opset"] == 17 and rep["slimmed"]
    assert rep["parity"]["passed"] and rep["parity"]["batch_sizes"] == [1, 2]
    model = onnx.load(str(a))
    onnx.checker.check_model(model, full_check=True)
    assert len(model.graph.value_info) > 0  # shapes inferred and stored
    assert [o.name for o in model.graph.output] == ["output"]

    meta = read_metadata(a)
    assert meta.task == "multilabel-classification" and meta.labels == ["effusion", "nodule", "mass"]
    assert meta.input_layout == "NCHW" and meta.model == TINY and meta.source_sha256 == rep["source_sha256"]

    ins = run_cli("inspect", a, report=True)
    assert ins.returncode == 0, ins.stderr[-2000:]
    info = ins.report
    assert info["metadata"]["labels"] == ["effusion", "nodule", "mass"]
    assert info["inputs"] == [{"name": "input", "shape": ["batch", 1, 32, 32], "dtype": "float32"}]
    assert info["outputs"][0]["shape"] == ["batch", 3]
    assert info["ops"]["Conv"] == 2 and "BatchNormalization" not in info["ops"]  # BN folded
    assert info["params"] == rep["onnx_params"] and info["macs"] == rep["onnx_macs"]
    # conv1: 32*32*8*9, conv2: 16*16*16*8*9, head: 16*3
    assert info["macs"] == 32 * 32 * 8 * 9 + 16 * 16 * 16 * 8 * 9 + 16 * 3 == rep["macs"]
    assert info["sha256"] == rep["sha256"] and info["opset"] == 17


def test_inspect_rejects_non_onnx_and_truncated_files(run_cli, tmp_path, zoo_onnx):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    assert_one_line_error(run_cli("inspect", junk), "not a valid ONNX model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(zoo_onnx("us-frame-screen").read_bytes()[:5000])
    assert_one_line_error(run_cli("inspect", truncated), "not a valid ONNX model")
    assert_one_line_error(run_cli("inspect", tmp_path / "missing.onnx"), "file not found")


@pytest.mark.slow
def test_state_dict_checkpoint_safetensors_opsets_and_samples(run_cli, tmp_path, tiny_models):
    source = tiny_models.tiny_conv(num_classes=2)
    with torch.no_grad():  # weights that differ from the factory's seeded init
        for p in source.parameters():
            p.add_(0.1)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)
    st = tmp_path / "w.safetensors"
    save_file(source.state_dict(), str(st))
    samples = tmp_path / "samples.npz"
    np.savez(samples, input=np.random.default_rng(1).standard_normal((4, 1, 24, 24)).astype(np.float32))

    kwargs = ["--model-kwargs", json.dumps({"num_classes": 2}), "--input-shape", "1x1x24x24"]
    x = torch.randn(1, 1, 24, 24)
    expected = source(x).detach().numpy()
    for weights, opset in ((wrapped, "13"), (st, "18")):
        out = tmp_path / f"m{opset}.onnx"
        res = run_cli("export", TINY, "-o", out, "--weights", weights, "--opset", opset, "--samples", samples,
                      *kwargs, report=True)
        assert res.returncode == 0, res.stderr[-2000:]
        rep = res.report
        assert rep["opset"] == int(opset) and rep["exporter"] == ("dynamo" if opset == "18" else "torchscript")
        assert rep["parity"]["passed"] and rep["parity"]["n_samples"] == 4
        import onnxruntime as ort

        got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
        np.testing.assert_allclose(got, expected, atol=1e-5)  # the checkpoint's weights, not the init
        assert not list(tmp_path.glob("*.data"))  # no external data even with dynamo


@pytest.mark.slow
def test_torchscript_and_exported_program_files(run_cli, tmp_path, tiny_models):
    model = tiny_models.tiny_conv()
    x = torch.zeros(2, 1, 16, 16)
    ts = tmp_path / "model.pt"
    torch.jit.save(torch.jit.trace(model, x[:1]), str(ts))
    ep = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), str(ep))
    static_ep = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(model, (x[:1],)), str(static_ep))

    res = run_cli("export", ts, "-o", tmp_path / "ts.onnx", "--input-shape", "1x1x16x16", "--dynamic-batch", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["exporter"] == "torchscript" and res.report["parity"]["passed"]
    assert res.report["parity"]["batch_sizes"] == [1, 2]

    res = run_cli("export", ep, "-o", tmp_path / "ep.onnx", "--dynamic-batch", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["exporter"] == "dynamo" and res.report["opset"] == 18
    assert res.report["parity"]["passed"] and res.report["parity"]["batch_sizes"] == [1, 2]
    assert res.report["inputs"][0]["shape"] == ["batch", 1, 16, 16]

    assert_one_line_error(run_cli("export", static_ep, "-o", tmp_path / "s.onnx", "--dynamic-batch"),
                          "static batch", code=2)
    assert_one_line_error(run_cli("export", ts, "-o", tmp_path / "t.onnx"), "--input-shape is required", code=2)


def test_a_dynamic_batch_program_exports_static_unless_asked(run_cli, tmp_path, tiny_models):
    """`medge prune` saves dynamic-batch programs; without --dynamic-batch their ONNX has batch 1 like any
    other static export (a symbolic batch put OpenVINO's CPU plugin on its slower dynamic-shape path)."""
    model = tiny_models.tiny_conv()
    ep = tmp_path / "model.pt2"
    x = torch.zeros(2, 1, 16, 16)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), str(ep))
    res = run_cli("export", ep, "-o", tmp_path / "static.onnx", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["inputs"][0]["shape"] == [1, 1, 16, 16] and res.report["parity"]["passed"]
    dims = onnx.load(str(tmp_path / "static.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 16, 16]
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "static.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x[:1].numpy() + 0.5})[0]
    np.testing.assert_allclose(got, model(x[:1] + 0.5).detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_multi_output_model_and_custom_autograd_function(run_cli, tmp_path, tiny_models):
    res = run_cli("export", "fixtures.tiny_models:two_heads", "-o", tmp_path / "two.onnx",
                  "--input-shape", "1x1x16x16", "--dynamic-batch", report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [o["name"] for o in res.report["outputs"]] == ["output_0", "output_1"]
    assert [o["shape"] for o in res.report["outputs"]] == [["batch", 1, 16, 16], ["batch", 2]]
    assert len(res.report["parity"]["outputs"]) == 2 and res.report["parity"]["passed"]

    res = run_cli("export", "fixtures.tiny_models:custom_function_net", "-o", tmp_path / "fn.onnx",
                  "--input-shape", "1x1x16x16", report=True)
    assert res.returncode == 0 and res.report["parity"]["passed"], res.stderr[-2000:]


def test_parity_failure_exits_1_and_writes_nothing(run_cli, tmp_path, tiny_models):
    out = tmp_path / "branch.onnx"
    res = run_cli("export", "fixtures.tiny_models:branch_net", "-o", out, "--input-shape", "1x1x16x16", report=True)
    line = assert_one_line_error(res, "differs from PyTorch", "output 'output'", "nothing written")
    assert "max abs error" in line
    assert not out.exists() and not list(tmp_path.glob(".branch.onnx.*"))
    assert res.report["parity"]["passed"] is False and res.report["written"] is False
    assert res.report["parity"]["max_abs_error"] > 1e-2
