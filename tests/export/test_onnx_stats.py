"""The ONNX-graph counters used by `medge inspect`, on a hand-built graph with known answers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from medge.export.onnx_stats import count_macs, count_params, graph_summary, op_histogram


def _graph() -> onnx.ModelProto:
    w = lambda name, *shape: numpy_helper.from_array(np.ones(shape, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1], group=2),            # 4→8, groups 2
        helper.make_node("ConvTranspose", ["c", "tw"], ["t"], strides=[2, 2]),             # 8→2, k2 s2
        helper.make_node("Flatten", ["t"], ["f"]),                                          # (N, 2*16*16)
        helper.make_node("Gemm", ["f", "gw"], ["g"], transB=1),                             # 512→10
        helper.make_node("MatMul", ["g", "mw"], ["y"]),                                     # 10→3
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [w("cw", 8, 2, 3, 3), w("tw", 8, 2, 2, 2), w("gw", 10, 512), w("mw", 10, 3),
         numpy_helper.from_array(np.array([1, 2], np.int64), "not_a_weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_counts_match_hand_computed_values():
    model = _graph()
    onnx.checker.check_model(model)
    conv = 8 * 8 * 8 * (2 * 9)          # out elements × (Cin/groups × k)
    deconv = 8 * 8 * 8 * (2 * 4)        # in elements × (Cout/groups × k)
    gemm = 10 * 512
    matmul = 3 * 10
    assert count_macs(model) == conv + deconv + gemm + matmul
    assert count_params(model) == 8 * 2 * 9 + 8 * 2 * 4 + 10 * 512 + 10 * 3  # int64 tensors are not weights
    assert op_histogram(model) == {"Conv": 1, "ConvTranspose": 1, "Flatten": 1, "Gemm": 1, "MatMul": 1}
    summary = graph_summary(model)
    assert summary["opset"] == 17 and summary["nodes"] == 5
    assert summary["inputs"] == [{"name": "x", "shape": ["batch", 4, 8, 8], "dtype": "float32"}]


def test_einsum_contractions_are_counted():
    # the promptable decoder's mask product "bc,bchw->bhw" (a batched matmul written as Einsum)
    # and an ellipsis-broadcast matmul; a one-operand Einsum (a trace) does no multiply-accumulate
    nodes = [helper.make_node("Einsum", ["w", "f"], ["m"], equation="bc,bchw->bhw"),
             helper.make_node("Einsum", ["a", "b"], ["p"], equation="...ij,...jk->...ik"),
             helper.make_node("Einsum", ["s"], ["t"], equation="ii->i")]
    graph = helper.make_graph(
        nodes, "e",
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("f", TensorProto.FLOAT, ["batch", 16, 8, 8]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 4, 5]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 5, 6]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["batch", 8, 8]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 3, 4, 6]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    assert count_macs(model) == 16 * 8 * 8 + 2 * 3 * 4 * 5 * 6
