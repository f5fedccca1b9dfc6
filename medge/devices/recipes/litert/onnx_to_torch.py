"""A small offline ONNX → PyTorch converter, so that an ONNX-only model can go through litert-torch.

It covers the operators that medge's exported models use (CNNs, DenseNets, U-Nets, the ECG net
and the hybrid ViT): convolutions, pooling, normalisation, element-wise maths, Gemm/MatMul,
Reshape/Transpose/Gather with constant shape/index inputs, Softmax and LayerNormalization, plus
the building blocks of newer models (ReduceSum/ReduceMax, CumSum, Exp, Log, Max/Min, Where,
HardSwish/HardSigmoid, Softplus, LeakyRelu, Resize, Slice, Pad, InstanceNormalization), each an
exact rewrite checked against ONNX Runtime in the tests.
Every float initializer becomes a frozen parameter of the returned module (so PT2E quantizes it
as a weight); shapes must be static (batch 1), which
is what the mobile delegates need anyway.

Each operator (or family of operators) is one handler registered in `HANDLERS` (``op_type →
handler(graph, node, attrs, inputs)``); `SUPPORTED_OPS` is that table's keys.  A model with an
operator outside it raises `ExportError` naming the operator, its node and the supported ones.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from medge.devices.recipes.litert.rewrites import conv_transpose2d_as_conv, prelu_as_residual_relu, slope_side
from medge.common.errors import ExportError

Handler = Callable[["OnnxGraphModule", onnx.NodeProto, dict[str, Any], list[Any]], Any]
#: op_type -> the handler that runs it with torch ops (``Constant`` nodes are folded on load)
HANDLERS: dict[str, Handler] = {}


def _handles(*ops: str) -> Callable[[Handler], Handler]:
    """Register the decorated handler for `ops`."""
    def register(handler: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = handler
        return handler
    return register


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pads_2d(pads: list[int] | None, spatial: int) -> tuple[list[int], bool]:
    """ONNX pads (begin..., end...) → (symmetric torch padding, needs explicit F.pad)."""
    if not pads:
        return [0] * spatial, False
    begin, end = pads[:spatial], pads[spatial:]
    return list(begin), list(begin) != list(end)


def _explicit_pad(x: torch.Tensor, pads: list[int], spatial: int) -> torch.Tensor:
    begin, end = pads[:spatial], pads[spatial:]
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return F.pad(x, flat)


def _text(value: Any) -> Any:
    """An ONNX string attribute as ``str`` (onnx returns bytes)."""
    return value.decode() if isinstance(value, bytes) else value


# ---- convolution, pooling, normalisation ------------------------------------------------------
@_handles("Conv")
def _conv(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    spatial = w.dim() - 2
    pad, asym = _pads_2d(a.get("pads"), spatial)
    if _text(a.get("auto_pad", "NOTSET")) != "NOTSET":
        raise ExportError("ONNX Conv with auto_pad is not supported by the ONNX→PyTorch path; re-export with explicit pads")
    if asym:
        x, pad = _explicit_pad(x, a["pads"], spatial), [0] * spatial
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return conv(x, w, b, stride=a.get("strides", 1), padding=pad, dilation=a.get("dilations", 1), groups=a.get("group", 1))


@_handles("ConvTranspose")
def _conv_transpose(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    spatial = w.dim() - 2
    pad, asym = _pads_2d(a.get("pads"), spatial)
    if asym:
        raise ExportError("ONNX ConvTranspose with asymmetric pads is not supported by the ONNX→PyTorch path")
    conv_t = {1: F.conv_transpose1d, 2: conv_transpose2d_as_conv, 3: F.conv_transpose3d}[spatial]
    return conv_t(x, w, b, stride=a.get("strides", 1), padding=pad, output_padding=a.get("output_padding", 0),
                  groups=a.get("group", 1), dilation=a.get("dilations", 1))


@_handles("MaxPool", "AveragePool")
def _pool(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    k = a["kernel_shape"]
    spatial = len(k)
    pad, asym = _pads_2d(a.get("pads"), spatial)
    if asym:
        raise ExportError(f"ONNX {node.op_type} with asymmetric pads is not supported by the ONNX→PyTorch path")
    stride, ceil = a.get("strides", k), bool(a.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
        return pool(ins[0], k, stride, pad, a.get("dilations", 1), ceil_mode=ceil)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
    return pool(ins[0], k, stride, pad, ceil_mode=ceil, count_include_pad=bool(a.get("count_include_pad", 0)))


@_handles("GlobalAveragePool")
def _global_average_pool(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x = ins[0]
    if x.dim() == 4:  # the idioms the PT2E quantizer annotates
        return F.adaptive_avg_pool2d(x, 1)
    return x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@_handles("BatchNormalization")
def _batch_norm(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return F.batch_norm(ins[0], ins[3], ins[4], ins[1], ins[2], False, 0.0, a.get("epsilon", 1e-5))


@_handles("InstanceNormalization")
def _instance_norm(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return F.instance_norm(ins[0], weight=ins[1], bias=ins[2], eps=a.get("epsilon", 1e-5))


@_handles("LayerNormalization")
def _layer_norm(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x = ins[0]
    axis = a.get("axis", -1) % x.dim()
    return F.layer_norm(x, tuple(x.shape[axis:]), ins[1], ins[2] if len(ins) > 2 else None, a.get("epsilon", 1e-5))


# ---- linear algebra ---------------------------------------------------------------------------
@_handles("Gemm")
def _gemm(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    if a.get("transB", 0) and not a.get("transA", 0) and a.get("alpha", 1.0) == 1.0 and a.get("beta", 1.0) == 1.0:
        return F.linear(x, w, b)
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y + a.get("beta", 1.0) * b if b is not None else y


@_handles("MatMul")
def _matmul(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return torch.matmul(ins[0], ins[1])


@_handles("Einsum")
def _einsum(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return torch.einsum(_text(a["equation"]), *ins)


# ---- element-wise -----------------------------------------------------------------------------
_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Abs": torch.abs, "Cos": torch.cos, "Erf": torch.erf, "Exp": torch.exp, "HardSwish": F.hardswish,
    "Identity": lambda x: x, "Log": torch.log, "Neg": torch.neg, "Relu": F.relu, "Sigmoid": torch.sigmoid,
    "Sin": torch.sin, "Softplus": F.softplus, "Sqrt": torch.sqrt, "Tanh": torch.tanh,
}
_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow,
    "Greater": torch.gt, "Less": torch.lt, "Equal": torch.eq,
}


@_handles(*_UNARY)
def _unary(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return _UNARY[node.op_type](ins[0])


@_handles(*_BINARY)
def _binary(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return _BINARY[node.op_type](ins[0], ins[1])


@_handles("Max", "Min")
def _max_min(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    fn = torch.maximum if node.op_type == "Max" else torch.minimum
    out = ins[0]
    for other in ins[1:]:
        out = fn(out, other)
    return out


@_handles("PRelu")
def _prelu(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    slope = g.consts.get(node.input[1])  # ops the INT8 quantizer annotates and XNNPACK runs (see rewrites.py)
    return prelu_as_residual_relu(ins[0], ins[1], slope_side(slope) if slope is not None else 0)


@_handles("LeakyRelu")
def _leaky_relu(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, alpha = ins[0], float(a.get("alpha", 0.01))  # as MUL + MAXIMUM, which the INT8 quantizer takes (not LEAKY_RELU)
    return torch.maximum(x, x * alpha) if 0.0 <= alpha <= 1.0 else F.leaky_relu(x, alpha)


@_handles("HardSigmoid")
def _hard_sigmoid(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return torch.clamp(a.get("alpha", 0.2) * ins[0] + a.get("beta", 0.5), 0.0, 1.0)


@_handles("Clip")
def _clip(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
    hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
    return torch.clamp(ins[0], min=float(lo) if lo is not None else None, max=float(hi) if hi is not None else None)


@_handles("Where")
def _where(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return torch.where(ins[0].bool(), ins[1], ins[2])


@_handles("Softmax")
def _softmax(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return F.softmax(ins[0], dim=a.get("axis", -1))


# ---- reductions -------------------------------------------------------------------------------
@_handles("ReduceMean")
def _reduce_mean(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, axes = ins[0], g.axes(node, a)
    return x.mean(dim=tuple(axes) if axes else tuple(range(x.dim())), keepdim=bool(a.get("keepdims", 1)))


@_handles("ReduceSum", "ReduceMax")
def _reduce_sum_max(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, axes, keep = ins[0], g.axes(node, a), bool(a.get("keepdims", 1))
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    if node.op_type == "ReduceSum":
        return x.sum(dim=tuple(axes), keepdim=keep)
    return torch.amax(x, dim=tuple(axes), keepdim=keep)


@_handles("CumSum")
def _cumsum(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, axis, reverse = ins[0], g.int_list(node.input[1])[0], a.get("reverse", 0)
    y = torch.cumsum(x.flip(axis) if reverse else x, dim=axis)
    if a.get("exclusive", 0):
        y = y - (x.flip(axis) if reverse else x)
    return y.flip(axis) if reverse else y


# ---- shapes and indexing ----------------------------------------------------------------------
@_handles("Flatten")
def _flatten(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, axis = ins[0], a.get("axis", 1)
    return x.flatten(axis) if axis == 1 else x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)


@_handles("Reshape")
def _reshape(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x = ins[0]
    shape = g.int_list(node.input[1])
    return x.reshape([x.shape[i] if s == 0 and not a.get("allowzero", 0) else s for i, s in enumerate(shape)])


@_handles("Transpose")
def _transpose(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x = ins[0]
    return x.permute(*(a.get("perm") or list(reversed(range(x.dim())))))


@_handles("Squeeze")
def _squeeze(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    axes = g.axes(node, a)
    return ins[0].squeeze(tuple(axes)) if axes else ins[0].squeeze()


@_handles("Unsqueeze")
def _unsqueeze(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, axes = ins[0], g.axes(node, a) or []
    for ax in sorted(ax % (x.dim() + len(axes)) for ax in axes):
        x = x.unsqueeze(ax)
    return x


@_handles("Concat")
def _concat(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    return torch.cat(ins, dim=a["axis"])


@_handles("Split")
def _split(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x, axis = ins[0], int(a.get("axis", 0))
    if len(node.input) > 1 and node.input[1]:
        sizes = g.int_list(node.input[1])
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:  # equal parts (opset 18 num_outputs, or one per output), the last one smaller
        parts = len(node.output)
        step = -(-x.shape[axis] // parts)
        sizes = [min(step, x.shape[axis] - k * step) for k in range(parts)]
    return tuple(torch.split(x, sizes, dim=axis))


@_handles("Gather")
def _gather(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    if node.input[1] not in g.consts:
        raise ExportError("ONNX Gather with a computed index is not supported by the ONNX→PyTorch path")
    x, index, axis = ins[0], np.asarray(g.consts[node.input[1]]), a.get("axis", 0)
    if index.ndim == 0:
        return x.select(axis, int(index))
    return x.index_select(axis, torch.from_numpy(index.astype(np.int64)).reshape(-1)).reshape(
        *x.shape[:axis], *index.shape, *x.shape[axis + 1:]
    )


@_handles("Slice")
def _slice(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x = ins[0]
    starts, ends = g.int_list(node.input[1]), g.int_list(node.input[2])
    axes = g.axes(node, {}, 3) or list(range(len(starts)))
    steps = g.int_list(node.input[4]) if len(node.input) > 4 and node.input[4] else [1] * len(starts)
    index = [slice(None)] * x.dim()
    reversed_axes = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        if step == 0:
            raise ExportError(f"ONNX Slice node {node.name!r} has step 0; re-export the model")
        if step > 0:
            index[axis] = slice(max(-size, min(start, size)), max(-size - 1, min(end, size)), step)
        else:  # ONNX clamps start to [0, size-1] and end to [-1, size-1] for a negative step
            start = min(max(start + size if start < 0 else start, 0), size - 1)
            end = min(max(end + size if end < 0 else end, -1), size - 1)
            reversed_axes.append((axis % x.dim(), list(range(start, end, step))))
    y = x[tuple(index)]
    for axis, picks in reversed_axes:  # torch indexing has no negative steps: flip, or gather
        full = picks == list(range(x.shape[axis] - 1, -1, -1))
        y = y.flip(axis) if full else y.index_select(axis, torch.tensor(picks, dtype=torch.long))
    return y


@_handles("Pad")
def _pad(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    pads = g.int_list(node.input[1]) if len(node.input) > 1 else list(a["pads"])
    mode = _text(a.get("mode", "constant"))
    value = float(ins[2]) if len(ins) > 2 and ins[2] is not None else float(a.get("value", 0.0))
    half = len(pads) // 2
    flat: list[int] = []
    for b, e in zip(reversed(pads[:half]), reversed(pads[half:])):
        flat += [b, e]
    while flat and flat[-2:] == [0, 0]:  # F.pad pads the last dims first; drop the untouched leading ones
        flat = flat[:-2]
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[mode]
    return F.pad(ins[0], flat, mode=torch_mode, value=value) if torch_mode == "constant" else F.pad(ins[0], flat, mode=torch_mode)


@_handles("Resize")
def _resize(g: OnnxGraphModule, node: onnx.NodeProto, a: dict[str, Any], ins: list[Any]) -> Any:
    x = ins[0]
    mode = _text(a.get("mode", "nearest"))
    ctm = _text(a.get("coordinate_transformation_mode", "half_pixel"))
    sizes = g.int_list(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    scales = None
    if sizes is None and len(node.input) > 2 and node.input[2]:
        scales = [float(v) for v in np.asarray(g.consts[node.input[2]]).reshape(-1)]
    spatial = x.dim() - 2
    size = sizes[2:] if sizes else [int(np.floor(x.shape[2 + i] * scales[2 + i])) for i in range(spatial)]
    if mode == "nearest" and _text(a.get("nearest_mode", "round_prefer_floor")) == "floor" and ctm == "asymmetric":
        return F.interpolate(x, size=size, mode="nearest")
    if mode == "linear" and ctm in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        kind = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
        return F.interpolate(x, size=size, mode=kind, align_corners=ctm == "align_corners")
    raise ExportError(f"ONNX Resize node {node.name!r} with mode={mode}, coordinate_transformation_mode={ctm} "
                      "has no exact PyTorch rewrite; re-export with nearest/asymmetric/floor or linear/half_pixel")


#: every op the converter takes (``Constant`` is folded into the constants on load)
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted({*HANDLERS, "Constant"}))


class OnnxGraphModule(torch.nn.Module):
    """Runs an ONNX graph with torch ops (`HANDLERS`); float initializers are (frozen) parameters."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        unsupported = [n for n in graph.node if n.op_type not in SUPPORTED_OPS]
        if unsupported:
            kinds = sorted({n.op_type for n in unsupported})
            first = unsupported[0]
            raise ExportError(
                f"the ONNX→PyTorch path cannot convert ops {kinds} (first: {first.op_type} node "
                f"{first.name or first.output[0]!r}); it converts {', '.join(SUPPORTED_OPS)}; "
                "pass the PyTorch model instead (--model-ref zoo-name or module:factory)"
            )
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                value = _attrs(node).get("value")
                if value is None:
                    raise ExportError(f"ONNX Constant node {node.name!r} has no tensor 'value'; re-export the model")
                self.consts[node.output[0]] = numpy_helper.to_array(value)
        self._nodes = [n for n in graph.node if n.op_type != "Constant"]
        # One frozen parameter per (node, input) use of a float constant: the exporter deduplicates
        # equal initializers (e.g. zero biases), and PT2E cannot quantize a bias shared by two convs.
        self._param_of: dict[tuple[int, int], str] = {}
        for i, node in enumerate(self._nodes):
            for j, name in enumerate(node.input):
                arr = self.consts.get(name)
                if arr is not None and arr.dtype.kind == "f" and node.op_type not in ("Reshape",):
                    key = f"p{i}_{j}"
                    tensor = torch.from_numpy(np.array(arr, dtype=np.float32))
                    self.register_parameter(key, torch.nn.Parameter(tensor, requires_grad=False))
                    self._param_of[(i, j)] = key
        init_names = {i.name for i in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in init_names]
        self.output_names = [o.name for o in graph.output]

    def int_list(self, name: str) -> list[int]:
        """The constant input `name` as a list of ints (shapes, axes, sizes must be static)."""
        if name not in self.consts:
            raise ExportError(f"ONNX input {name!r} must be a constant for the ONNX→PyTorch path (static shapes only)")
        return [int(v) for v in np.asarray(self.consts[name]).reshape(-1)]

    def axes(self, node: onnx.NodeProto, a: dict[str, Any], position: int = 1) -> list[int] | None:
        """Reduction/slice axes from the attribute (older opsets) or the constant input (newer)."""
        if a.get("axes") is not None:
            return list(a["axes"])
        if len(node.input) > position and node.input[position]:
            return self.int_list(node.input[position])
        return None

    def forward(self, *args: torch.Tensor) -> Any:
        """Run the graph on `args` (the graph's inputs, in order); one output or a tuple."""
        env: dict[str, Any] = dict(zip(self.input_names, args))

        def get(i: int, j: int, name: str) -> Any:
            if name in env:
                return env[name]
            if (i, j) in self._param_of:
                return getattr(self, self._param_of[(i, j)])
            if name in self.consts:
                return torch.from_numpy(np.array(self.consts[name]))
            raise ExportError(f"ONNX value {name!r} is used before it is produced; the graph is not topologically sorted")

        for i, node in enumerate(self._nodes):
            ins = [get(i, j, n) if n else None for j, n in enumerate(node.input)]
            result = HANDLERS[node.op_type](self, node, _attrs(node), ins)
            outs = result if isinstance(result, tuple) else (result,)
            for name, value in zip(node.output, outs):
                env[name] = value
        outputs = tuple(env[n] for n in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs


def onnx_to_torch(path: str | Path) -> OnnxGraphModule:
    """Load an ONNX file (with its external data) as an eval-mode `torch.nn.Module`."""
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises several types for an unreadable file
        raise ExportError(f"cannot read ONNX file {path}: {exc}; re-export it with 'medge export'") from exc
    return OnnxGraphModule(model).eval()
