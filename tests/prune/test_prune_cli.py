"""`medge prune` through the real CLI: structured/unstructured pruning, export of the result, errors."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import pytest
from fixtures.cli_checks import assert_one_line_error

from medge.common.metadata import ModelMeta, read_sidecar
from medge.zoo import get_card


def _prune(run_cli, tmp_path: Path, model: str, *args: str, name: str = "pruned.pt2"):
    out = tmp_path / name
    res = run_cli("prune", model, "-o", out, *args, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["output"] == str(out) and out.is_file()
    return res.report, out


def _export(run_cli, tmp_path: Path, pt2: Path, *args: str) -> dict:
    onnx = tmp_path / (pt2.stem + ".onnx")
    res = run_cli("export", pt2, "-o", onnx, *args, report=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.report["parity"]["passed"] and onnx.is_file()
    return res.report


def _assert_structured_shrinks(report: dict) -> None:
    assert report["mode"] == "structured"
    assert report["params"]["after"] < 0.5 * report["params"]["before"]
    assert report["macs"]["after"] < 0.5 * report["macs"]["before"]
    assert report["narrowed_layers"] > 0
    assert report["parity"]["max_abs_error"] <= report["parity"]["atol"]


def _assert_sidecar_matches_card(pt2: Path, model: str) -> None:
    sidecar = dataclasses.asdict(read_sidecar(pt2))
    assert set(sidecar) == set(ModelMeta.__dataclass_fields__)
    card = get_card(model)
    assert sidecar["task"] == card.task and sidecar["labels"] == list(card.labels)
    assert sidecar["preprocessing"] == json.loads(json.dumps(card.preprocessing))
    assert sidecar["extra"]["input_shape"] == list(card.input_shape)
    assert sidecar["extra"]["pruning"]["source_model"] == model


def test_structured_prune_shrinks_and_exports_with_parity(run_cli, tmp_path):
    report, pt2 = _prune(run_cli, tmp_path, "us-frame-screen", "--sparsity", "0.5")
    _assert_structured_shrinks(report)
    assert report["onnx_size_bytes"]["after"] < 0.5 * report["onnx_size_bytes"]["before"]
    assert report["kept_layers"]["output"] == ["fc"]
    assert report["dynamic_batch"] is True
    _assert_sidecar_matches_card(pt2, "us-frame-screen")
    exported = _export(run_cli, tmp_path, pt2, "--dynamic-batch")
    # the sidecar carries the card's metadata into the ONNX file
    assert exported["metadata"]["task"] == get_card("us-frame-screen").task
    assert exported["metadata"]["labels"] == list(get_card("us-frame-screen").labels)
    assert exported["macs"] == pytest.approx(report["macs"]["after"], rel=0.05)
    assert exported["size_bytes"] < 0.5 * report["onnx_size_bytes"]["before"]
    again = run_cli("prune", pt2, "-o", tmp_path / "again.pt2")
    assert again.returncode == 2 and "pruning needs the PyTorch module" in again.stderr


def test_unstructured_prune_zeroes_weights_but_keeps_macs(run_cli, tmp_path):
    report, pt2 = _prune(run_cli, tmp_path, "us-frame-screen", "--mode", "unstructured", "--sparsity", "0.6")
    assert report["zero_fraction"] == pytest.approx(0.6, abs=0.01)
    assert 0.3 < report["zero_fraction_all_params"] <= 0.6
    assert report["params"]["after"] == report["params"]["before"]
    assert report["macs"]["after"] == report["macs"]["before"]
    assert report["onnx_size_bytes"]["after"] == pytest.approx(report["onnx_size_bytes"]["before"], rel=0.01)
    assert "sparse kernels" in report["speedup_note"]
    assert read_sidecar(pt2).extra["pruning"]["mode"] == "unstructured"


@pytest.mark.slow
def test_structured_prune_of_residual_factory_model(run_cli, tmp_path, residual_models_on_path):
    report, pt2 = _prune(run_cli, tmp_path, "residual_models:tiny_resnet", "--input-shape", "1x1x64x64",
                         "--sparsity", "0.5", "--model-kwargs", '{"width": 16}', "--no-onnx-size")
    _assert_structured_shrinks(report)
    assert report["onnx_size_bytes"] is None
    assert report["kept_layers"]["output"] == ["head"]
    assert read_sidecar(pt2).task == "unknown"
    _export(run_cli, tmp_path, pt2, "--dynamic-batch")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cxr-densenet-tiny", "us-lesion-unet", "ecg-3to12"])
def test_structured_prune_of_concat_skip_and_1d_models_exports(run_cli, tmp_path, model):
    report, pt2 = _prune(run_cli, tmp_path, model, "--sparsity", "0.5")
    _assert_structured_shrinks(report)
    assert report["onnx_size_bytes"]["after"] < 0.5 * report["onnx_size_bytes"]["before"]
    _assert_sidecar_matches_card(pt2, model)
    exported = _export(run_cli, tmp_path, pt2)
    assert exported["outputs"][0]["shape"][1:] == list(get_card(model).output_shape)[1:]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--sparsity", "1.5"], 2, "--sparsity must be in"),
        (["--sparsity", "0"], 2, "--sparsity must be in"),
        (["--mode", "random"], 2, "invalid choice"),
        (["--distill-steps", "0", "--finetune", "synthetic:us-frame"], 2, "--distill-steps must be"),
        (["--model-kwargs", "{bad"], 2, "not valid JSON"),
        (["--metric", "aurocc"], 1, "did you mean 'auroc'"),
    ],
)
def test_bad_arguments_are_one_line_errors(run_cli, tmp_path, args, code, words):
    res = run_cli("prune", "us-frame-screen", "-o", tmp_path / "x.pt2", *args)
    assert res.returncode == code
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert words in res.stderr
    assert not (tmp_path / "x.pt2").exists()


def test_bad_output_suffix_and_unknown_model(run_cli, tmp_path):
    res = run_cli("prune", "us-frame-screen", "-o", tmp_path / "x.onnx")
    assert res.returncode == 2 and "must end in .pt2" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("prune", "us-frame-scren", "-o", tmp_path / "x.pt2")
    assert res.returncode == 1 and "did you mean 'us-frame-screen'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_multi_input_model_is_refused_with_a_reason(run_cli, tmp_path):
    res = run_cli("prune", "us-lesion-sam", "--sparsity", "auto", "--finetune", "synthetic", "-o", tmp_path / "s.pt2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "takes 2 inputs (image, point)" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.pt2").exists()


def test_build_prune_of_a_model_whose_channels_cannot_be_pruned_names_the_build_fix(run_cli, tmp_path):
    """torch_pruning cannot trace the Mamba blocks' channel splits: `medge build --prune` says so in one
    line and offers what `build` can do (no --prune), not `medge prune`'s --mode flag."""
    res = run_cli("build", "ecg-mamba-3to12", "--target", "intel-cpu", "--prune", "0.5", "--distill-steps", "1",
                  "-o", tmp_path / "b")
    line = assert_one_line_error(res, "cannot prune the channels of 'ecg-mamba-3to12'", "without --prune",
                                 "medge prune --mode unstructured")
    assert "; use --mode" not in line
    assert not (tmp_path / "b").exists()
