"""`medge compare` end to end: every format/runtime against the ONNX reference, thresholds,
layouts, bundles and the task metric on real data."""

from __future__ import annotations

import shutil

import numpy as np
from tiny_artifacts import INPUT_SHAPE, reference_output

from fixtures.cli_checks import assert_one_line_error


def make_bundle(folder, tiny):
    """A minimal medge bundle holding the tflite (NHWC) artifact and the ONNX it came from."""
    from medge.common.bundle import write_manifest

    folder.mkdir()
    shutil.copy(tiny.tflite_nhwc, folder / "model.tflite")
    shutil.copy(tiny.onnx, folder / "model.onnx")
    write_manifest(folder, {"target": "test-cpu", "primary_artifact": "model.tflite", "runtime": "litert", "runtime_device": "cpu"})
    return folder


def test_every_format_matches_the_reference(run_cli, tiny, tmp_path):
    bundle = make_bundle(tmp_path / "bundle", tiny)
    res = run_cli(
        "compare", tiny.onnx, tiny.ir, tiny.tflite, tiny.tflite_nhwc, f"{tiny.onnx}@openvino", bundle,
        "--n", "4", "--max-abs-error", "1e-4", "--min-cosine", "0.99999", report=True,
    )
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["reference"] == str(tiny.onnx) and r["reference_runtime"] == "onnxruntime"
    assert r["n_inputs"] == 4 and r["inputs_source"] == "random-normal(seed=0)"
    assert [a["runtime"] for a in r["artifacts"]] == ["openvino", "litert", "litert", "openvino", "litert"]
    assert r["artifacts"][-1]["path"] == str(bundle)
    for row in r["artifacts"]:
        assert row["passed"] and row["failures"] == []
        assert 0 <= row["max_abs_error"] < 1e-4 and row["cosine"] > 0.99999
        assert row["max_rel_error"] >= row["max_abs_error"] and row["metric"] is None


def test_a_different_model_fails_the_thresholds(run_cli, tiny):
    res = run_cli("compare", tiny.onnx, tiny.onnx_other, "--min-cosine", "0.999", "--max-abs-error", "0.01", report=True)
    assert res.returncode == 1
    (row,) = res.report["artifacts"]
    assert not row["passed"] and row["max_abs_error"] > 0.01 and row["cosine"] < 0.999
    assert len(row["failures"]) == 2
    # Without thresholds the fp32 defaults apply (and are in the report).
    default = run_cli("compare", tiny.onnx, tiny.onnx_other, report=True)
    assert default.returncode == 1
    (row,) = default.report["artifacts"]
    assert row["precision"] == "fp32" and row["limits"]["from"] == "fp32 defaults" and row["limits"]["min_cosine"] == 0.9999


def test_metric_on_npz_targets_with_layout_change(run_cli, tiny, tmp_path):
    import onnx

    from medge.common.metadata import ModelMeta, embed_metadata

    model = onnx.load(str(tiny.onnx))
    embed_metadata(model, ModelMeta(model="tiny", task="segmentation", labels=["a", "b"], input_layout="NCHW", preprocessing={}))
    seg = tmp_path / "seg.onnx"
    onnx.save(model, str(seg))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, *INPUT_SHAPE[1:])).astype(np.float32)
    y = (reference_output(x) > 0.5).astype(np.uint8)  # masks the model gets exactly right
    y[:, :, :4] = 1 - y[:, :, :4]  # … except a band, so Dice is below 1
    data = tmp_path / "eval.npz"
    np.savez(data, x=x, y=y, preprocessed=True)
    res = run_cli("compare", seg, tiny.tflite_nhwc, "--inputs", data, "--n", "6", report=True)
    assert res.returncode == 0, res.stderr
    r = res.report
    assert r["metric_name"] == "dice" and r["n_inputs"] == 6 and r["inputs_source"] == str(data)
    assert r["inputs_report"]["source"] == str(data)
    assert 0.5 < r["reference_metric"] < 0.95
    (row,) = r["artifacts"]
    assert abs(row["metric_delta"]) < 1e-6 and row["metric"] == r["reference_metric"] + row["metric_delta"]
    explicit = run_cli("compare", seg, tiny.ir, "--inputs", data, "--metric", "iou", report=True)
    assert explicit.report["metric_name"] == "iou" and explicit.report["reference_metric"] < r["reference_metric"]


def test_usage_errors_are_one_line(run_cli, tiny, tmp_path):
    res = run_cli("compare", tiny.onnx)
    assert res.returncode == 1 and "at least two artifacts" in res.stderr
    res = run_cli("compare", tiny.onnx, tiny.ir, "--metric", "dice")
    assert res.returncode == 1 and "--metric needs --inputs" in res.stderr
    res = run_cli("compare", tiny.onnx, tmp_path / "nope.tflite")
    assert res.returncode == 1 and "artifact not found" in res.stderr


def test_incompatible_input_shapes(run_cli, tiny, tmp_path):
    import torch

    path = tmp_path / "wide.onnx"
    torch.onnx.export(torch.nn.Conv2d(1, 2, 3, padding=1).eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False,
                      input_names=["image"], output_names=["probs"])
    res = run_cli("compare", tiny.onnx, path)
    # the one error line names the artifact's input shape and the data's (the first artifact's) shape
    assert_one_line_error(res, "no NCHW/NHWC transpose fits", "expects shape [1, 1, 8, 8]",
                          f"the data has {list(INPUT_SHAPE)}")
