"""AppModel on real bundles: metadata preprocessing, task checks, input sizes, NHWC/int8 artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from medge.apps.model import AppModel, classifier_threshold
from medge.common.errors import MedgeError


def test_segmenter_bundle_runs_on_any_frame_size(app_bundles):
    with AppModel.open(app_bundles.segmenter, role="--segmenter", expect_task="segmentation") as model:
        assert model.input_hw == (64, 64)  # from the metadata, not hard-coded
        assert model.describe()["runtime"] == "onnxruntime"
        for shape in [(480, 640), (64, 64), (300, 200, 3)]:
            (mask,) = model.predict(np.random.default_rng(0).random(shape, dtype=np.float32))
            assert mask.shape == (1, 1, 64, 64) and mask.dtype == np.float32
            assert 0.0 <= mask.min() <= mask.max() <= 1.0


def test_screen_bundle_on_openvino(app_bundles):
    with AppModel.open(app_bundles.screen, role="--screen", expect_task="classification") as model:
        assert model.describe()["runtime"] == "openvino"
        (prob,) = model.predict(np.zeros((100, 120), np.float32))
        assert prob.shape == (1, 1)
        assert classifier_threshold(model.meta) == 0.5


def test_wrong_task_is_a_one_line_error(app_bundles):
    with pytest.raises(MedgeError, match=r"--segmenter .* is a classifier \(task 'classification'\), not a segmentation model"):
        AppModel.open(app_bundles.screen, role="--segmenter", expect_task="segmentation")


def test_size_the_artifact_cannot_take(app_bundles):
    with pytest.raises(MedgeError, match="cannot take a 100×100 input"):
        AppModel.open(app_bundles.segmenter, expect_task="segmentation", input_size=(100, 100))


def test_nhwc_artifact_is_fed_and_read_back_in_model_layout(app_bundles, tmp_path):
    """An NHWC ONNX made from the segmenter (as TFLite artifacts are): same masks as the NCHW bundle."""
    import onnx
    from onnx import TensorProto, helper

    src = onnx.load(str(app_bundles.segmenter_onnx))
    graph = src.graph
    inp, out = graph.input[0].name, graph.output[0].name
    nodes = [helper.make_node("Transpose", ["nhwc_in"], [inp], perm=[0, 3, 1, 2]), *graph.node,
             helper.make_node("Transpose", [out], ["nhwc_out"], perm=[0, 2, 3, 1])]
    new_graph = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("nhwc_in", TensorProto.FLOAT, [1, 64, 64, 1])],
                                  [helper.make_tensor_value_info("nhwc_out", TensorProto.FLOAT, [1, 64, 64, 1])],
                                  list(graph.initializer))
    model = helper.make_model(new_graph, opset_imports=src.opset_import, ir_version=src.ir_version)
    model.metadata_props.extend(src.metadata_props)
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, str(path))

    frame = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    with AppModel.open(app_bundles.segmenter) as ref:
        (want,) = ref.predict(frame)
    with AppModel.open(path, expect_task="segmentation") as model:
        assert model.input_info.shape == (1, 64, 64, 1)
        (got,) = model.predict(frame)
    assert got.shape == (1, 1, 64, 64)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_missing_metadata_is_a_one_line_error(app_bundles, tmp_path):
    import onnx

    model = onnx.load(str(app_bundles.segmenter_onnx))
    del model.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    with pytest.raises(MedgeError, match="carries no medge metadata"):
        AppModel.open(path)
