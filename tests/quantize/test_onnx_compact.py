"""`compact_qdq_model` shrinks a graph without changing what it computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from medge.quantize.backends.onnx_compact import compact_qdq_model


class PreActDense(nn.Module):
    """DenseNet-style: Concat → BatchNorm → ReLU → Conv, a BN no exporter can fold into a Conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.norm_a = nn.BatchNorm2d(16)
        self.conv_a = nn.Conv2d(16, 8, 3, padding=1)
        self.norm_b = nn.BatchNorm2d(16)
        self.conv_b = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        a = self.conv_a(torch.relu(self.norm_a(torch.cat([s, s * 0.5], 1))))
        return self.conv_b(torch.relu(self.norm_b(torch.cat([s, a], 1))))


def _export(path) -> onnx.ModelProto:
    torch.manual_seed(0)
    net = PreActDense()
    with torch.no_grad():
        for bn in (net.norm_a, net.norm_b):  # non-trivial running statistics
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.2, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    torch.onnx.export(net.eval(), (torch.zeros(1, 1, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["features"])
    return onnx.load(str(path))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": x})[0]


def test_compaction_keeps_outputs_io_names_and_node_names(tmp_path):
    model = _export(tmp_path / "m.onnx")
    node_names = [n.name for n in model.graph.node]
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 2
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 16)).astype(np.float32)
    before = _run(model, x)
    size_before = len(model.SerializeToString())

    assert compact_qdq_model(model) is True
    onnx.checker.check_model(model)
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["features"]
    assert [n.name for n in model.graph.node] == node_names  # the model's own node names survive
    internal = {t for n in model.graph.node for t in (*n.input, *n.output)} - {"image", "features"}
    assert all(len(t) <= 4 for t in internal) and not model.graph.value_info
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert bns[0].input[3] == bns[1].input[3] and bns[0].input[4] == bns[1].input[4]  # shared 0/1 statistics
    assert len(model.SerializeToString()) < size_before
