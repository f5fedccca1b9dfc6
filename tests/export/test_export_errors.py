"""Every bad input gives one line, a non-zero exit code and no traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures.cli_checks import assert_one_line_error

TINY = "fixtures.tiny_models:tiny_conv"


def test_unknown_model_and_bad_references(run_cli, tmp_path, tiny_models):
    out = tmp_path / "m.onnx"
    assert_one_line_error(run_cli("export", "us-frame-scren", "-o", out), "unknown model", "did you mean 'us-frame-screen'")
    assert_one_line_error(run_cli("export", "no_such_pkg.nets:Net", "-o", out, "--input-shape", "1x1x8x8"),
                          "cannot import 'no_such_pkg.nets'")
    assert_one_line_error(run_cli("export", "fixtures.tiny_models:nope", "-o", out, "--input-shape", "1x1x8x8"),
                          "has no attribute 'nope'")
    assert_one_line_error(run_cli("export", "fixtures.tiny_models:broken_factory", "-o", out, "--input-shape", "1x1x8x8"),
                          "broken on purpose")
    assert_one_line_error(run_cli("export", TINY, "-o", out, "--input-shape", "1x1x8x8", "--model-kwargs", "{bad"),
                          "--model-kwargs is not valid JSON", code=2)
    assert_one_line_error(run_cli("export", TINY, "-o", out, "--input-shape", "1x1x8x8", "--model-kwargs", '{"depth": 3}'),
                          "--model-kwargs do not fit", "depth")
    assert_one_line_error(run_cli("export", TINY, "-o", out, "--input-shape", "1xAx8"), "bad input shape", code=2)
    assert_one_line_error(run_cli("export", TINY, "-o", out, "--input-shape", "1x1x8x8", "--opset", "5"),
                          "--opset 5", code=2)
    assert not out.exists()


def test_weight_key_mismatch_lists_keys(run_cli, tmp_path, tiny_models):
    wrong = tmp_path / "wrong.pth"
    torch.save(tiny_models.two_heads().state_dict(), wrong)
    line = assert_one_line_error(
        run_cli("export", TINY, "-o", tmp_path / "m.onnx", "--input-shape", "1x1x8x8", "--weights", wrong),
        "do not match the model", "missing keys: features.0.weight", "unexpected keys: body.weight",
    )
    assert "(11 total)" in line  # long lists are truncated
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": tiny_models.tiny_conv()}, pickled)  # a whole pickled module: refused
    assert_one_line_error(run_cli("export", TINY, "-o", tmp_path / "m.onnx", "--input-shape", "1x1x8x8", "--weights", pickled),
                          "weights_only=True")


def test_wrong_input_rank(run_cli, tmp_path, tiny_models):
    assert_one_line_error(run_cli("export", TINY, "-o", tmp_path / "m.onnx", "--input-shape", "1x1x8"),
                          "rejects input shape 1x1x8 (rank 3)")
    assert_one_line_error(run_cli("export", "us-frame-screen", "-o", tmp_path / "m.onnx", "--input-shape", "1x128x128"),
                          "rank 3", "takes rank 4")
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((3, 1, 16, 16), np.float32))
    assert_one_line_error(run_cli("export", TINY, "-o", tmp_path / "m.onnx", "--input-shape", "1x1x8x8", "--samples", samples),
                          "have shape (3, 1, 16, 16)", "expected (N, 1, 8, 8)")


@pytest.mark.slow  # tries both exporters: ~30 s
def test_unsupported_op_names_op_and_module(run_cli, tmp_path, tiny_models):
    out = tmp_path / "eig.onnx"
    assert_one_line_error(run_cli("export", "fixtures.tiny_models:eigen_net", "-o", out, "--input-shape", "1x1x8x8"),
                          "op 'linalg_eig'", "module spectrum (EigenBlock)", "dynamo exporter at opset 18 fails too")
    assert not out.exists()
