"""Op-coverage preflight for TensorRT: which ONNX nodes build, fall back to the GPU, or fail.

The support tables are data (``tensorrt_ops.json``), transcribed from onnx-tensorrt
``docs/operators.md`` (release 8.4 for the TensorRT 8.2 table, 8.5-GA, and 10.x) and the DLA layer
restrictions of the TensorRT developer guide; they are loaded and checked once, on import.  Every
ONNX-domain operator that exists at the model's opset is supported unless the table lists it as
unsupported; per-op restrictions that can be checked statically are checked here.  Nothing here
needs TensorRT, so the check runs on the workstation BEFORE anyone flashes a device.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TABLES_FILE = Path(__file__).with_name("tensorrt_ops.json")


@dataclass(frozen=True)
class TensorRTOpTable:
    """What one TensorRT version's ONNX parser accepts."""

    name: str
    version: str
    max_opset: int
    unsupported: frozenset[str]
    strongly_typed: bool  # --stronglyTyped / explicit-precision networks (TensorRT >= 9)
    axes_must_be_constant: bool  # Slice/Squeeze/Unsqueeze/TopK/ReduceX inputs must be initializers


@dataclass(frozen=True)
class DlaRules:
    """The layers a DLA core runs and their limits (everything else falls back to the GPU)."""

    ops: frozenset[str]
    folded_ops: frozenset[str]  # nodes TensorRT folds away: they never decide DLA placement
    resize_max_scale: dict[str, int]  # Resize mode -> largest integer upsampling factor
    limits: dict[str, int]  # conv_kernel, conv_stride, conv_pad, conv_out_channels, pool_window, ...


_DLA_LIMITS = ("conv_kernel", "conv_stride", "conv_pad", "conv_out_channels", "pool_window", "pool_stride", "pool_pad")


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"bad {TABLES_FILE.name}: {where} must be a list of op names")
    return value


def _table(name: str, tables: dict[str, Any], groups: dict[str, list[str]], seen: tuple[str, ...] = ()) -> TensorRTOpTable:
    """Table `name` with its ``extends`` parent and ``unsupported_groups`` resolved."""
    if name in seen:
        raise ValueError(f"bad {TABLES_FILE.name}: tables {' -> '.join((*seen, name))} extend each other")
    raw = tables[name]
    try:
        version, max_opset = str(raw["version"]), raw["max_opset"]
        flags = {key: raw[key] for key in ("strongly_typed", "axes_must_be_constant")}
    except KeyError as exc:
        raise ValueError(f"bad {TABLES_FILE.name}: table {name!r} has no {exc}") from None
    if not isinstance(max_opset, int) or isinstance(max_opset, bool) or not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError(f"bad {TABLES_FILE.name}: table {name!r} needs an integer max_opset and true/false flags")
    unsupported = set(_names(raw.get("unsupported", []), f"tables.{name}.unsupported"))
    for group in raw.get("unsupported_groups", []):
        if group not in groups:
            raise ValueError(f"bad {TABLES_FILE.name}: table {name!r} names op group {group!r}; groups: {sorted(groups)}")
        unsupported |= set(groups[group])
    parent = raw.get("extends")
    if parent is not None:
        if parent not in tables:
            raise ValueError(f"bad {TABLES_FILE.name}: table {name!r} extends unknown table {parent!r}")
        unsupported |= _table(parent, tables, groups, (*seen, name)).unsupported
    return TensorRTOpTable(name, version, max_opset, frozenset(unsupported), **flags)


def load_tables(path: Path = TABLES_FILE) -> tuple[dict[str, TensorRTOpTable], dict[str, str], DlaRules]:
    """Read and check ``tensorrt_ops.json``: the op tables by name, the fixes by op, the DLA rules."""
    raw = json.loads(path.read_text())
    groups = {g: _names(ops, f"op_groups.{g}") for g, ops in raw.get("op_groups", {}).items()}
    tables = {name: _table(name, raw["tables"], groups) for name in raw["tables"]}
    fixes = raw.get("fixes", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in fixes.items()):
        raise ValueError(f"bad {path.name}: fixes must map op names to one-line fixes")
    dla = raw["dla"]
    limits = dla.get("limits", {})
    missing = [key for key in _DLA_LIMITS if not isinstance(limits.get(key), int)]
    scales = dla.get("resize_max_scale", {})
    if missing or not scales or not all(isinstance(v, int) and v >= 1 for v in scales.values()):
        raise ValueError(f"bad {path.name}: dla.limits needs integers {missing or list(_DLA_LIMITS)} "
                         "and dla.resize_max_scale integer factors per Resize mode")
    rules = DlaRules(frozenset(_names(dla["ops"], "dla.ops")), frozenset(_names(dla["folded_ops"], "dla.folded_ops")),
                     dict(scales), dict(limits))
    return tables, dict(fixes), rules


#: the TensorRT versions medge knows, by table name (a target's ``supported_ops``); the data stays
#: in ``tensorrt_ops.json``
OP_TABLES, _FIXES, _DLA = load_tables()


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
    op, limits = node.op_type, _DLA.limits
    if op not in _DLA.ops:
        return f"{op} is not a DLA layer"
    if op in ("Conv", "ConvTranspose"):
        kernel = _attr(node, "kernel_shape") or []
        if len(kernel) > 2:
            return "DLA runs 1D/2D convolutions only"
        if any(k > limits["conv_kernel"] for k in kernel):
            return f"kernel {kernel} exceeds the DLA limit of {limits['conv_kernel']}"
        strides = _attr(node, "strides") or []
        if any(s > limits["conv_stride"] for s in strides):
            return f"stride {strides} exceeds the DLA limit of {limits['conv_stride']}"
        pads = _attr(node, "pads") or []
        if any(p > limits["conv_pad"] for p in pads):
            return f"padding {pads} exceeds the DLA limit of {limits['conv_pad']}"
        if op == "ConvTranspose" and any(p != 0 for p in pads):
            return "DLA deconvolution needs zero padding"
        if op == "ConvTranspose" and (_attr(node, "group", 1) != 1):
            return "DLA deconvolution cannot be grouped"
        w = g.shapes.get(node.input[1]) or (list(g.consts[node.input[1]].shape) if g.consts.get(node.input[1]) is not None else None)
        if w and w[0] and w[0] > limits["conv_out_channels"]:
            return f"{w[0]} output channels exceed the DLA limit of {limits['conv_out_channels']}"
    if op in ("MaxPool", "AveragePool"):
        kernel = _attr(node, "kernel_shape") or []
        if any(k > limits["pool_window"] for k in kernel):
            return f"pooling window {kernel} exceeds the DLA limit of {limits['pool_window']}"
        if any(s > limits["pool_stride"] for s in (_attr(node, "strides") or [])):
            return f"pooling stride exceeds the DLA limit of {limits['pool_stride']}"
        if any(p > limits["pool_pad"] for p in (_attr(node, "pads") or [])):
            return f"pooling padding exceeds the DLA limit of {limits['pool_pad']}"
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        shape = g.shapes.get(node.input[0])
        spatial = shape[2:] if shape else None
        if not spatial or any(d is None for d in spatial):
            return "global pooling over an unknown spatial size"
        if any(d > limits["pool_window"] for d in spatial):
            return f"global pooling over {spatial} exceeds the DLA window limit of {limits['pool_window']}"
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
        limit = _DLA.resize_max_scale.get(mode)
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
        if dla and op not in _DLA.folded_ops:
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
