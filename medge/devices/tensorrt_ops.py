"""Op-coverage preflight for TensorRT: which ONNX nodes build, fall back to the GPU, or fail.

The support tables are data transcribed from onnx-tensorrt ``docs/operators.md`` (release 8.4 for
the TensorRT 8.2 table, 8.5-GA, and 10.x) and the DLA layer restrictions of the TensorRT developer
guide.  Every ONNX-domain operator that exists at the model's opset is supported unless the table
lists it as unsupported; per-op restrictions that can be checked statically are checked here.
Nothing here needs TensorRT, so the check runs on the workstation BEFORE anyone flashes a device.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_SEQUENCE_OPS = {
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SplitToSequence", "ConcatFromSequence",
}
_OPTIONAL_OPS = {"Optional", "OptionalGetElement", "OptionalHasElement"}

# ONNX operators the ONNX parser of each TensorRT version rejects ("N" rows of operators.md).
_UNSUPPORTED_8_5 = _SEQUENCE_OPS | _OPTIONAL_OPS | {
    "Bernoulli", "BitShift", "BlackmanWindow", "Compress", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "HammingWindow", "HannWindow", "Hardmax", "IsInf", "LayerNormalization", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "QLinearConv", "QLinearMatMul",
    "STFT", "SoftmaxCrossEntropyLoss", "StringNormalizer", "TfIdfVectorizer", "Unique",
}
_UNSUPPORTED_8_2 = _UNSUPPORTED_8_5 | {
    "MeanVarianceNormalization", "Mod", "NonZero", "OneHot", "RandomNormal", "RandomNormalLike", "Reciprocal",
    "RoiAlign", "Shrink", "GridSample",
}
_UNSUPPORTED_10 = _SEQUENCE_OPS | _OPTIONAL_OPS | {
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder",
    "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SoftmaxCrossEntropyLoss", "StringConcat",
    "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
}


# How to get rid of an unsupported op, where there is a known way.
_FIXES = {
    "LayerNormalization": "re-export with 'medge export --opset 16' so it is decomposed",
    "NonZero": "avoid data-dependent shapes (boolean indexing) in the model",
    "Unique": "move it to post-processing outside the model",
    "DynamicQuantizeLinear": "use static INT8 (QDQ) instead of dynamic quantization",
    "MatMulInteger": "use static INT8 (QDQ) instead of dynamic quantization",
    "ConvInteger": "use static INT8 (QDQ) instead of dynamic quantization",
}


@dataclass(frozen=True)
class TensorRTOpTable:
    """What one TensorRT version's ONNX parser accepts."""

    name: str
    version: str
    max_opset: int
    unsupported: frozenset[str]
    strongly_typed: bool  # --stronglyTyped / explicit-precision networks (TensorRT >= 9)
    axes_must_be_constant: bool  # Slice/Squeeze/Unsqueeze/TopK/ReduceX inputs must be initializers


OP_TABLES: dict[str, TensorRTOpTable] = {
    "tensorrt-8.2": TensorRTOpTable("tensorrt-8.2", "8.2", 13, frozenset(_UNSUPPORTED_8_2), False, True),
    "tensorrt-8.5": TensorRTOpTable("tensorrt-8.5", "8.5", 17, frozenset(_UNSUPPORTED_8_5), False, True),
    "tensorrt-10.3": TensorRTOpTable("tensorrt-10.3", "10.3", 20, frozenset(_UNSUPPORTED_10), True, False),
}

# Layers the DLA (Orin, DLA v2) runs; everything else falls back to the GPU with --allowGPUFallback.
_DLA_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Sigmoid",
    "Tanh", "Clip", "LeakyRelu", "PRelu", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow",
    "Equal", "Greater", "Less", "Concat", "Resize", "Upsample", "Softmax", "Abs", "Sin", "Cos", "Atan", "LRN",
    "Gemm", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice",
}
# Nodes that TensorRT folds away (no layer of their own), so they never decide DLA placement.
_FOLDED_OPS = {"QuantizeLinear", "DequantizeLinear", "Identity", "Constant", "Dropout", "Shape", "Cast"}
_DLA_RESIZE_MAX_SCALE = {"nearest": 32, "linear": 4}


@dataclass
class Preflight:
    """Op coverage of one ONNX graph for one TensorRT version and device (GPU or DLA)."""

    table: str
    toolkit_version: str
    device: str
    opset: int
    max_opset: int
    nodes: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    supported: list[str] = field(default_factory=list)  # op types that build as-is
    fallback: list[dict[str, str]] = field(default_factory=list)  # {node, op, reason}: DLA → GPU
    unsupported: list[dict[str, str]] = field(default_factory=list)  # {node, op, reason}: the build fails
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the engine build is expected to succeed (fallbacks allowed)."""
        return not self.unsupported

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored under ``preflight`` in the manifest and reports)."""
        return {
            "checker": "medge.devices.tensorrt_ops",
            "table": self.table,
            "toolkit_version": self.toolkit_version,
            "device": self.device,
            "opset": self.opset,
            "max_opset": self.max_opset,
            "nodes": self.nodes,
            "op_counts": dict(sorted(self.op_counts.items())),
            "supported": self.supported,
            "fallback": self.fallback,
            "unsupported": self.unsupported,
            "warnings": self.warnings,
            "ok": self.ok,
        }


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


class _Graph:
    """Constants, shapes and dtypes of one model, for the static checks."""

    def __init__(self, model) -> None:
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception:  # noqa: BLE001 - shape inference is best effort; checks degrade gracefully
            pass
        self.consts: dict[str, Any] = {}
        for init in model.graph.initializer:
            if init.data_location != onnx.TensorProto.EXTERNAL:
                self.consts[init.name] = numpy_helper.to_array(init)
            else:
                self.consts[init.name] = None  # known constant, value not loaded
        for node in model.graph.node:  # topological order: constants flow through Identity
            if node.op_type == "Constant" and node.output:
                t = _attr(node, "value")
                self.consts[node.output[0]] = numpy_helper.to_array(t) if t is not None else None
            elif node.op_type == "Identity" and node.input and node.input[0] in self.consts:
                self.consts[node.output[0]] = self.consts[node.input[0]]
            elif node.op_type == "DequantizeLinear" and all(n in self.consts for n in node.input if n):
                self.consts[node.output[0]] = None  # quantized weights: a build-time constant
        self.shapes: dict[str, list[int | None]] = {}
        self.dtypes: dict[str, int] = {}
        for vi in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
            tt = vi.type.tensor_type
            self.dtypes[vi.name] = tt.elem_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]

    def is_const(self, name: str) -> bool:
        return name == "" or name in self.consts


def _gpu_restriction(node, g: _Graph, table: TensorRTOpTable) -> str | None:
    """Why the ONNX parser rejects this node, or None."""
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear"):
        zp = g.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if len(node.input) > 2 and node.input[2] and not g.is_const(node.input[2]):
            return "zero point must be a constant"
        if zp is not None and (zp != 0).any():
            return "zero point must be 0 (symmetric quantization); quantize with the trt_compatible option"
        x = g.consts.get(node.input[0]) if op == "DequantizeLinear" else None
        if x is not None and str(x.dtype) not in ("int8",):
            return f"DequantizeLinear of a {x.dtype} constant (e.g. an int32 bias) is not supported; keep biases float"
        if zp is not None and str(zp.dtype) == "uint8":
            return "uint8 Q/DQ is not a TensorRT quantized type; quantize activations to int8"
    if op in ("Conv", "ConvTranspose") and not table.strongly_typed and not g.is_const(node.input[1]):
        return "weights W must be an initializer"
    if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
        return "the Indices output is not supported"
    if op in ("MaxPool", "AveragePool", "LpPool"):
        dil = _attr(node, "dilations")
        if dil and any(d != 1 for d in dil):
            return "pooling dilations must be 1"
    if op == "Resize":
        mode = _attr(node, "mode", "nearest")
        ctm = _attr(node, "coordinate_transformation_mode", "half_pixel")
        if mode not in ("nearest", "linear"):
            return f"Resize mode '{mode}' is not supported (nearest or linear only)"
        if ctm not in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"):
            return f"Resize coordinate_transformation_mode '{ctm}' is not supported"
        if _attr(node, "antialias", 0):
            return "Resize antialiasing is not supported"
        if _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
            return "Resize keep_aspect_ratio_policy must be 'stretch'"
    if op == "Dropout" and len(node.input) > 2 and node.input[2]:
        mode = g.consts.get(node.input[2])
        if not g.is_const(node.input[2]) or (mode is not None and bool(mode)):
            return "training_mode must be a constant False"
    if op == "ScatterND" and _attr(node, "reduction", "none") != "none":
        return "ScatterND reduction other than 'none' is not supported"
    if op == "TopK" and len(node.input) > 1 and not g.is_const(node.input[1]):
        return "K must be an initializer"
    if op == "CumSum" and not g.is_const(node.input[1]):
        return "axis must be a constant"
    if table.axes_must_be_constant and op in ("Slice", "Squeeze", "Unsqueeze"):
        axes_index = 3 if op == "Slice" else 1
        if len(node.input) > axes_index and not g.is_const(node.input[axes_index]):
            return "axes must be an initializer for TensorRT 8"
    return None


def _dla_restriction(node, g: _Graph) -> str | None:
    """Why the DLA cannot run this node (it then falls back to the GPU), or None."""
    op = node.op_type
    if op not in _DLA_OPS:
        return f"{op} is not a DLA layer"
    if op in ("Conv", "ConvTranspose"):
        kernel = _attr(node, "kernel_shape") or []
        if len(kernel) > 2:
            return "DLA runs 1D/2D convolutions only"
        if any(k > 32 for k in kernel):
            return f"kernel {kernel} exceeds the DLA limit of 32"
        strides = _attr(node, "strides") or []
        if any(s > 8 for s in strides):
            return f"stride {strides} exceeds the DLA limit of 8"
        pads = _attr(node, "pads") or []
        if any(p > 31 for p in pads):
            return f"padding {pads} exceeds the DLA limit of 31"
        if op == "ConvTranspose" and any(p != 0 for p in pads):
            return "DLA deconvolution needs zero padding"
        if op == "ConvTranspose" and (_attr(node, "group", 1) != 1):
            return "DLA deconvolution cannot be grouped"
        w = g.shapes.get(node.input[1]) or (list(g.consts[node.input[1]].shape) if g.consts.get(node.input[1]) is not None else None)
        if w and w[0] and w[0] > 8192:
            return f"{w[0]} output channels exceed the DLA limit of 8192"
    if op in ("MaxPool", "AveragePool"):
        kernel = _attr(node, "kernel_shape") or []
        if any(k > 8 for k in kernel):
            return f"pooling window {kernel} exceeds the DLA limit of 8"
        if any(s > 16 for s in (_attr(node, "strides") or [])):
            return "pooling stride exceeds the DLA limit of 16"
        if any(p > 7 for p in (_attr(node, "pads") or [])):
            return "pooling padding exceeds the DLA limit of 7"
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        shape = g.shapes.get(node.input[0])
        spatial = shape[2:] if shape else None
        if not spatial or any(d is None for d in spatial):
            return "global pooling over an unknown spatial size"
        if any(d > 8 for d in spatial):
            return f"global pooling over {spatial} exceeds the DLA window limit of 8"
    if op == "Concat":
        shape = g.shapes.get(node.output[0])
        axis = _attr(node, "axis", 1)
        if shape is not None and axis < 0:
            axis += len(shape)
        if axis != 1:
            return "DLA concatenates along the channel axis only"
    if op in ("Resize", "Upsample"):
        mode = _attr(node, "mode", "nearest")
        scales = g.consts.get(node.input[2]) if op == "Resize" and len(node.input) > 2 and node.input[2] else None
        if scales is None or len(scales) == 0:
            return "DLA resize needs constant scales"
        if len(scales) != 4 or scales[0] != 1 or scales[1] != 1:
            return "DLA resize scales must be 4D with batch and channel scale 1"
        limit = _DLA_RESIZE_MAX_SCALE.get(mode)
        if limit is None or any(s < 1 or s > limit or s != int(s) for s in scales[2:]):
            return f"DLA resize supports integer upsampling up to {limit}x in '{mode}' mode"
    if op == "Softmax":
        shape = g.shapes.get(node.input[0])
        axis = _attr(node, "axis", -1)
        if shape is not None and axis < 0:
            axis += len(shape)
        if shape is None or len(shape) != 4 or axis != 1:
            return "DLA softmax runs on 4D tensors along the channel axis only"
    if op == "Gemm" and not g.is_const(node.input[1]):
        return "DLA fully-connected layers need constant weights"
    if op == "PRelu" and not g.is_const(node.input[1]):
        return "DLA PReLU needs a constant slope"
    if op in ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice"):
        shape = g.shapes.get(node.output[0])
        if shape is None or any(d is None for d in shape):
            return f"DLA {op} needs static shapes"
    return None


def _walk(graph):
    """Every node, including those inside If/Loop/Scan subgraphs."""
    import onnx

    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    yield from _walk(sub)


def check_tensorrt_ops(model, table: str, *, dla: bool = False) -> Preflight:
    """Check every node of `model` (a path or ``onnx.ModelProto``) against TensorRT `table`.

    With `dla`, nodes the DLA cannot run are listed as GPU fallbacks.  Nodes that the parser
    rejects are listed as unsupported (the engine build would fail).
    """
    import onnx

    if table not in OP_TABLES:
        raise KeyError(f"no TensorRT op table {table!r}; known: {sorted(OP_TABLES)}")
    spec = OP_TABLES[table]
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    pre = Preflight(spec.name, spec.version, "DLA" if dla else "GPU", opset, spec.max_opset)
    g = _Graph(model)
    if opset > spec.max_opset:
        pre.unsupported.append({
            "node": "<model>", "op": f"opset {opset}",
            "reason": f"TensorRT {spec.version} parses ONNX opset <= {spec.max_opset}; "
                      f"re-export with 'medge export --opset {spec.max_opset}'",
        })
    for inp in model.graph.input:
        if inp.name in g.consts:
            continue
        shape = g.shapes.get(inp.name) or []
        if any(d is None for d in shape[1:]):
            pre.warnings.append(f"input '{inp.name}' has dynamic non-batch dimensions {shape}; give static shapes")
        if dla and shape and shape[0] is None:
            pre.warnings.append(f"input '{inp.name}' has a dynamic batch; DLA engines are built with a static batch")
        if g.dtypes.get(inp.name) in (onnx.TensorProto.INT64, onnx.TensorProto.DOUBLE) and not spec.strongly_typed:
            pre.warnings.append(f"input '{inp.name}' is int64/double; TensorRT {spec.version} casts it down")
    counts: Counter[str] = Counter()
    supported: set[str] = set()
    for node in _walk(model.graph):
        op = node.op_type
        counts[op] += 1
        name = node.name or f"{op}_{counts[op]}"
        if node.domain not in ("", "ai.onnx"):
            pre.unsupported.append({"node": name, "op": f"{node.domain}::{op}",
                                    "reason": "custom-domain op; needs a TensorRT plugin"})
            continue
        if op in spec.unsupported:
            fix = f"; {_FIXES[op]}" if op in _FIXES else ""
            pre.unsupported.append({"node": name, "op": op, "reason": f"not supported by TensorRT {spec.version}{fix}"})
            continue
        reason = _gpu_restriction(node, g, spec)
        if reason:
            pre.unsupported.append({"node": name, "op": op, "reason": reason})
            continue
        if dla and op not in _FOLDED_OPS:
            dla_reason = _dla_restriction(node, g)
            if dla_reason:
                pre.fallback.append({"node": name, "op": op, "reason": f"{dla_reason}; runs on the GPU"})
                continue
        supported.add(op)
    pre.nodes = sum(counts.values())
    pre.op_counts = dict(counts)
    pre.supported = sorted(supported)
    if any(t == onnx.TensorProto.INT64 for t in g.dtypes.values()) and not spec.strongly_typed:
        pre.warnings.append(f"int64 tensors present; TensorRT {spec.version} casts them to int32")
    return pre
