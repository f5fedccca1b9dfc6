"""Every op the ONNX→PyTorch route rewrites, checked against ONNX Runtime on a one-node graph,
and the zoo's own ONNX files: every op they use is covered."""

from __future__ import annotations

import numpy as np
import pytest

OPSET = 17
SHAPE = [1, 3, 8, 8]


def _graph(tmp_path, name: str, nodes, inits=(), out_shape=None, in_shape=None, in_type=None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", in_type or TensorProto.FLOAT, in_shape or SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _i64(*v):
    return np.array(v, dtype=np.int64)


def _cases():
    from onnx import helper

    n = helper.make_node
    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    return {
        "Exp": ([n("Exp", ["x"], ["y"])], []),
        "Log": ([n("Exp", ["x"], ["a"]), n("Log", ["a"], ["y"])], []),
        "Max": ([n("Max", ["x", "c"], ["y"])], [("c", np.float32(0.1))]),
        "Min": ([n("Min", ["x", "c"], ["y"])], [("c", np.float32(0.1))]),
        "Where": ([n("Greater", ["x", "c"], ["m"]), n("Where", ["m", "x", "z"], ["y"])],
                  [("c", np.float32(0.0)), ("z", np.float32(-1.0))]),
        "HardSwish": ([n("HardSwish", ["x"], ["y"])], []),
        "HardSigmoid": ([n("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], []),
        "Softplus": ([n("Softplus", ["x"], ["y"])], []),
        "LeakyRelu": ([n("LeakyRelu", ["x"], ["y"], alpha=0.2)], []),
        "Neg": ([n("Neg", ["x"], ["y"])], []),
        "Abs": ([n("Abs", ["x"], ["y"])], []),
        "Cos": ([n("Cos", ["x"], ["y"])], []),
        "Sin": ([n("Sin", ["x"], ["y"])], []),
        "Einsum": ([n("Einsum", ["x", "w"], ["y"], equation="bchw,cd->bdhw")],
                   [("w", rng.standard_normal((3, 5)).astype(np.float32))]),
        "Split": ([n("Split", ["x", "sp"], ["a", "b"], axis=3), n("Sub", ["a", "b"], ["y"])], [("sp", _i64(4, 4))]),
        "Split-equal": ([n("Split", ["x"], ["a", "b"], axis=2), n("Mul", ["a", "b"], ["y"])], []),
        "ReduceSum": ([n("ReduceSum", ["x", "ax"], ["y"], keepdims=1)], [("ax", _i64(2, 3))]),
        "ReduceMax": ([n("ReduceMax", ["x"], ["y"], axes=[1], keepdims=0)], []),
        "CumSum": ([n("CumSum", ["x", "ax"], ["y"])], [("ax", _i64(3))]),
        "CumSum-reverse-exclusive": ([n("CumSum", ["x", "ax"], ["y"], reverse=1, exclusive=1)], [("ax", _i64(2))]),
        "Slice": ([n("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                  [("s", _i64(1, 2)), ("e", _i64(3, 100)), ("a", _i64(1, 3)), ("st", _i64(1, 2))]),
        "Slice-reverse": ([n("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                          [("s", _i64(-1)), ("e", _i64(-(2 ** 63))), ("a", _i64(3)), ("st", _i64(-1))]),
        "Slice-negative-step": ([n("Slice", ["x", "s", "e", "a", "st"], ["y"])],
                                [("s", _i64(6, 2)), ("e", _i64(0, 100)), ("a", _i64(2, 3)), ("st", _i64(-2, 1))]),
        "Pad": ([n("Pad", ["x", "p", "v"], ["y"])], [("p", _i64(0, 0, 1, 2, 0, 0, 3, 0)), ("v", np.float32(0.5))]),
        "Pad-reflect": ([n("Pad", ["x", "p"], ["y"], mode="reflect")], [("p", _i64(0, 0, 2, 1, 0, 0, 1, 2))]),
        "Pad-edge": ([n("Pad", ["x", "p"], ["y"], mode="edge")], [("p", _i64(0, 0, 1, 1, 0, 0, 1, 1))]),
        "InstanceNormalization": ([n("InstanceNormalization", ["x", "g", "b"], ["y"], epsilon=1e-5)],
                                  [("g", rng.random(3).astype(np.float32) + 0.5),
                                   ("b", rng.standard_normal(3).astype(np.float32))]),
        "Resize-nearest": ([n("Resize", ["x", "", "sc"], ["y"], mode="nearest", nearest_mode="floor",
                              coordinate_transformation_mode="asymmetric")],
                           [("sc", np.array([1, 1, 2, 2], dtype=np.float32))]),
        "Resize-linear": ([n("Resize", ["x", "", "", "sz"], ["y"], mode="linear",
                             coordinate_transformation_mode="half_pixel")], [("sz", _i64(1, 3, 12, 20))]),
        # the layers of medge's CNNs, U-Nets and ViTs
        "Conv": ([n("Conv", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                 [("w", f32(4, 3, 3, 3)), ("b", f32(4))]),
        "Conv-asymmetric-pads": ([n("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[0, 0, 1, 1], strides=[2, 2])],
                                 [("w", f32(4, 3, 3, 3))]),
        "ConvTranspose": ([n("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                          [("w", f32(3, 2, 2, 2)), ("b", f32(2))]),
        "MaxPool": ([n("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], []),
        "AveragePool": ([n("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])], []),
        "GlobalAveragePool": ([n("GlobalAveragePool", ["x"], ["y"])], []),
        "BatchNormalization": ([n("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])],
                               [("g", f32(3)), ("b", f32(3)), ("m", f32(3)), ("v", np.abs(f32(3)) + 0.5)]),
        "LayerNormalization": ([n("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)], [("g", f32(8)), ("b", f32(8))]),
        "Gemm": ([n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "w", "b"], ["y"], transB=1)],
                 [("w", f32(10, 192)), ("b", f32(10))]),
        "Gemm-alpha-beta": ([n("Flatten", ["x"], ["f"]), n("Gemm", ["f", "w", "b"], ["y"], alpha=0.5, beta=2.0)],
                            [("w", f32(192, 10)), ("b", f32(10))]),
        "MatMul": ([n("MatMul", ["x", "w"], ["y"])], [("w", f32(8, 5))]),
        "Reshape": ([n("Reshape", ["x", "s"], ["y"])], [("s", _i64(0, 3, -1))]),
        "Transpose": ([n("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], []),
        "Squeeze": ([n("ReduceMean", ["x"], ["m"], axes=[2, 3]), n("Squeeze", ["m", "ax"], ["y"])], [("ax", _i64(2, 3))]),
        "Unsqueeze": ([n("Unsqueeze", ["x", "ax"], ["y"])], [("ax", _i64(0, -1))]),
        "Concat": ([n("Concat", ["x", "x"], ["y"], axis=1)], []),
        "Gather": ([n("Gather", ["x", "i"], ["y"], axis=1)], [("i", _i64(2, 0))]),
        "Gather-scalar": ([n("Gather", ["x", "i"], ["y"], axis=1)], [("i", np.int64(1))]),
        "Clip": ([n("Clip", ["x", "lo", "hi"], ["y"])], [("lo", np.float32(-0.5)), ("hi", np.float32(0.7))]),
        "Softmax": ([n("Softmax", ["x"], ["y"], axis=1)], []),
        "PRelu": ([n("PRelu", ["x", "s"], ["y"])], [("s", f32(3, 1, 1))]),
        "Relu": ([n("Relu", ["x"], ["y"])], []),
        "Sigmoid": ([n("Sigmoid", ["x"], ["y"])], []),
        "Tanh": ([n("Tanh", ["x"], ["y"])], []),
        "Erf": ([n("Erf", ["x"], ["y"])], []),
        "Identity": ([n("Identity", ["x"], ["y"])], []),
        "Sqrt": ([n("Abs", ["x"], ["a"]), n("Sqrt", ["a"], ["y"])], []),
        "Pow": ([n("Pow", ["x", "c"], ["y"])], [("c", np.float32(2.0))]),
        "Add": ([n("Add", ["x", "c"], ["y"])], [("c", f32(8))]),
        "Div": ([n("Div", ["x", "c"], ["y"])], [("c", np.float32(4.0))]),
        "Less": ([n("Less", ["x", "c"], ["m"]), n("Where", ["m", "x", "c"], ["y"])], [("c", np.float32(0.2))]),
        "Equal": ([n("Equal", ["x", "x"], ["m"]), n("Where", ["m", "x", "z"], ["y"])], [("z", np.float32(-1.0))]),
        "Constant": ([n("Constant", [], ["c"], value=helper.make_tensor("v", 1, [1], [0.25])), n("Mul", ["x", "c"], ["y"])], []),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_rewrite_matches_onnx_runtime(name, tmp_path):
    import onnxruntime as ort
    import torch

    from medge.devices.recipes.litert.onnx_to_torch import onnx_to_torch

    nodes, inits = CASES[name]
    path = _graph(tmp_path, name.replace("-", "_"), nodes, inits)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        got = onnx_to_torch(path)(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_every_new_building_block_op_is_covered():
    from medge.devices.recipes.litert.onnx_to_torch import SUPPORTED_OPS

    wanted = {"ReduceSum", "CumSum", "Exp", "Log", "Max", "Where", "HardSwish", "Softplus", "Resize", "Slice",
              "InstanceNormalization", "Pad", "LeakyRelu"}
    assert wanted <= set(SUPPORTED_OPS)
    tested = {name.split("-")[0] for name in CASES}
    assert wanted <= tested


def test_every_handler_has_a_one_node_case():
    from medge.devices.recipes.litert.onnx_to_torch import HANDLERS, SUPPORTED_OPS

    used = {node.op_type for nodes, _ in CASES.values() for node in nodes}
    assert set(SUPPORTED_OPS) == {*HANDLERS, "Constant"}
    assert set(SUPPORTED_OPS) - used == set(), "add a one-node case for every op the converter takes"


def test_unconvertible_model_names_the_op_and_its_node(tmp_path):
    from onnx import helper

    from medge.devices.recipes.litert.onnx_to_torch import onnx_to_torch
    from medge.common.errors import ExportError

    path = _graph(tmp_path, "nms", [helper.make_node("Relu", ["x"], ["r"], name="act"),
                                    helper.make_node("GridSample", ["r", "r"], ["y"], name="warp")])
    with pytest.raises(ExportError, match=r"GridSample.*'warp'.*it converts Abs, Add, AveragePool, .*, Where;"):
        onnx_to_torch(path)
    resize = _graph(tmp_path, "cubic", [helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up", mode="cubic")],
                    [("sc", np.array([1, 1, 2, 2], dtype=np.float32))])
    import torch

    with pytest.raises(ExportError, match="Resize node 'up' with mode=cubic"):
        onnx_to_torch(resize)(torch.zeros(SHAPE))


def _zoo_models() -> list[str]:
    from medge.zoo import MODELS

    return sorted(MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("model", _zoo_models())
def test_zoo_onnx_converts_exactly(model, tmp_path):
    """Every zoo model's ONNX (the research architectures and the multi-input ones included)
    converts through the route and gives ONNX Runtime's outputs."""
    import onnxruntime as ort
    import torch

    from medge.devices.recipes.litert.onnx_to_torch import onnx_to_torch
    from medge.export import export_onnx

    path = tmp_path / f"{model}.onnx"
    exported = export_onnx(model, path)
    rng = np.random.default_rng(0)
    feeds = {i["name"]: rng.standard_normal(tuple(i["shape"])).astype(np.float32) for i in exported.inputs}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wants = sess.run(None, feeds)
    with torch.no_grad():
        got = onnx_to_torch(path)(*(torch.from_numpy(feeds[i.name]) for i in sess.get_inputs()))
    gots = got if isinstance(got, tuple) else (got,)
    assert len(gots) == len(wants)
    for g, want in zip(gots, wants):
        assert float(np.abs(g.numpy() - want).max()) <= 1e-3 * max(float(np.abs(want).max()), 1e-6)
