"""The real `medge quantize` CLI refuses calibration data that leaks into the evaluation set."""

from __future__ import annotations

import numpy as np
from calib_fixtures import image_meta, write_png


def _identity_onnx(path, meta) -> None:
    import onnx
    from onnx import TensorProto, helper

    from medge.common.metadata import embed_metadata

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["probabilities"], axes=[2, 3], keepdims=0)], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    embed_metadata(model, meta)
    onnx.save(model, str(path))


def test_quantize_with_overlapping_calib_and_eval_exits_1_with_one_line(tmp_path, run_cli):
    meta = image_meta(task="classification", labels=("lesion",), size=8)
    rng = np.random.default_rng(0)
    for cls in ("lesion", "normal"):
        for i in range(4):
            write_png(tmp_path / "data" / cls / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    _identity_onnx(tmp_path / "m.onnx", meta)
    out = tmp_path / "q.onnx"
    res = run_cli("quantize", tmp_path / "m.onnx", "-o", out, "--calib", tmp_path / "data",
                  "--eval", tmp_path / "data", "--max-drop", "0.5")
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("medge: error:")]
    assert len(errors) == 1 and "share 8 of 8 samples" in errors[0] and "--allow-overlap" in errors[0]
    assert "Traceback" not in res.stderr and not out.exists()
