"""Graph clean-up before PT2E INT8 quantization, so that the whole model runs as integer ops.

`fold_for_npu` works on the ``torch.export`` graph of the model (ATen ops) and makes the graph
the same whatever the PyTorch source was (the model reference or the ONNX file converted in
house), which is what keeps the two routes' .tflite files within a small tolerance of each other:

* ``batch_norm`` right after a convolution whose output nothing else reads is folded into the
  convolution's weights and bias (``W' = W·γ/σ``, ``b' = (b − μ)·γ/σ + β``, σ = √(var + ε));
* any other (eval-mode) ``batch_norm`` — DenseNet's pre-activation BN, a BN after a concat or a
  pooling — becomes a 1×1 depthwise convolution with the same per-channel scale and shift.  The
  quantizer gives it per-channel int8 weights (one weight per channel, so the scale is exact) and
  an int32 bias, and it lowers to ``DEPTHWISE_CONV_2D``, which every NPU delegate runs, instead of
  the float ``MUL``/``ADD`` pair an unannotated BN leaves behind;
* eval-mode ``dropout`` (the identity) is removed;
* in-place ATen ops (``relu_``, ``hardtanh_``...) become their functional forms, so that the
  quantizer's pattern matchers see the same ops as in an ONNX-route graph.

The result is re-exported, so node metadata (shapes, dtypes) is fresh for the quantizer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import torch

aten = torch.ops.aten
_BATCH_NORMS = (aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default)
_CONVS = {aten.conv1d.default: 1, aten.conv2d.default: 2}
_FUNCTIONAL = {
    aten.relu_.default: aten.relu.default,
    aten.hardtanh_.default: aten.hardtanh.default,
    aten.sigmoid_.default: aten.sigmoid.default,
    aten.silu_.default: aten.silu.default,
    aten.hardswish_.default: aten.hardswish.default,
    aten.leaky_relu_.default: aten.leaky_relu.default,
    aten.add_.Tensor: aten.add.Tensor,
    aten.mul_.Tensor: aten.mul.Tensor,
}


@dataclass
class FoldReport:
    """What `fold_for_npu` changed in the graph."""

    bn_folded_into_conv: int = 0
    bn_as_depthwise_conv: int = 0
    bn_left: int = 0
    inplace_made_functional: int = 0
    dropout_removed: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _constant(gm: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor behind a ``get_attr`` node (None for anything computed)."""
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value.detach() if isinstance(value, torch.Tensor) else None


class _Constants:
    """Registers new constant tensors on the graph module with unique, deterministic names."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm, self.count = gm, 0

    def add(self, value: torch.Tensor, before: torch.fx.Node) -> torch.fx.Node:
        name = f"_npu_fold_{self.count}"
        self.count += 1
        self.gm.register_buffer(name, value.detach().clone().contiguous())
        with self.gm.graph.inserting_before(before):
            return self.gm.graph.get_attr(name)


def _bn_affine(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) per channel of an eval-mode batch_norm node, or None if it is not foldable."""
    if node.target is aten.batch_norm.default:
        x, weight, bias, mean, var, training, _momentum, eps = node.args[:8]
        if training:
            return None
    else:  # _native_batch_norm_legit_no_training(x, weight, bias, mean, var, momentum, eps)
        x, weight, bias, mean, var, _momentum, eps = node.args[:7]
    mean_t, var_t = _constant(gm, mean), _constant(gm, var)
    if mean_t is None or var_t is None:
        return None
    weight_t = _constant(gm, weight) if weight is not None else torch.ones_like(mean_t)
    bias_t = _constant(gm, bias) if bias is not None else torch.zeros_like(mean_t)
    if weight_t is None or bias_t is None:
        return None
    scale = weight_t.double() / torch.sqrt(var_t.double() + float(eps))
    shift = bias_t.double() - mean_t.double() * scale
    return scale, shift


def _bn_output(node: torch.fx.Node) -> torch.fx.Node:
    """The node whose value stands for the BN result (`_native_batch_norm_legit_no_training` returns a tuple)."""
    if node.target is aten.batch_norm.default:
        return node
    getitems = [u for u in node.users if u.target is operator.getitem and u.args[1] == 0]
    return getitems[0] if len(getitems) == 1 else node


def _fold_into_conv(gm: torch.fx.GraphModule, consts: _Constants, bn: torch.fx.Node, scale, shift) -> bool:
    conv = bn.args[0]
    if not isinstance(conv, torch.fx.Node) or conv.target not in _CONVS or len(conv.users) != 1:
        return False
    weight = _constant(gm, conv.args[1])
    bias_node = conv.args[2] if len(conv.args) > 2 else None
    if weight is None or len(conv.args[1].users) != 1:
        return False
    bias = _constant(gm, bias_node) if bias_node is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    if bias is None:
        return False
    view = (-1,) + (1,) * (weight.dim() - 1)
    new_w = (weight.double() * scale.view(view)).to(weight.dtype)
    new_b = (bias.double() * scale + shift).to(weight.dtype)
    args = list(conv.args) + [None] * (3 - len(conv.args))
    args[1], args[2] = consts.add(new_w, conv), consts.add(new_b, conv)
    conv.args = tuple(args)
    _bn_output(bn).replace_all_uses_with(conv)
    return True


def _as_depthwise(gm: torch.fx.GraphModule, consts: _Constants, bn: torch.fx.Node, scale, shift) -> bool:
    x = bn.args[0]
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    if val is None or val.dim() not in (3, 4):
        return False
    channels, spatial = int(val.shape[1]), val.dim() - 2
    dtype = val.dtype
    weight = scale.to(dtype).reshape((channels, 1) + (1,) * spatial)
    out = _bn_output(bn)
    conv_op = aten.conv2d.default if spatial == 2 else aten.conv1d.default
    with gm.graph.inserting_before(bn):
        w_node, b_node = consts.add(weight, bn), consts.add(shift.to(dtype), bn)
        conv = gm.graph.call_function(conv_op, (x, w_node, b_node, [1] * spatial, [0] * spatial, [1] * spatial, channels))
    out.replace_all_uses_with(conv)
    return True


def _rewrite(gm: torch.fx.GraphModule) -> FoldReport:
    report = FoldReport()
    consts = _Constants(gm)
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is aten.dropout.default and node.args[2] is False:
            node.replace_all_uses_with(node.args[0])  # eval-mode dropout is the identity
            gm.graph.erase_node(node)
            report.dropout_removed += 1
        elif node.op == "call_function" and node.target in _FUNCTIONAL:
            node.target = _FUNCTIONAL[node.target]
            report.inplace_made_functional += 1
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in _BATCH_NORMS:
            continue
        affine = _bn_affine(gm, node)
        if affine is None:
            report.bn_left += 1
        elif _fold_into_conv(gm, consts, node, *affine):
            report.bn_folded_into_conv += 1
        elif _as_depthwise(gm, consts, node, *affine):
            report.bn_as_depthwise_conv += 1
        else:
            report.bn_left += 1
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return report


def fold_for_npu(module: torch.nn.Module, example: tuple[torch.Tensor, ...]) -> tuple[torch.fx.GraphModule, FoldReport]:
    """Export `module` (eval mode) on `example`, fold/convert its BatchNorms and re-export.

    Returns the unlifted graph module ready for ``prepare_pt2e`` and what was changed.
    """
    gm = torch.export.export(module, example).module()
    report = _rewrite(gm)
    return torch.export.export(gm, example).module(), report
