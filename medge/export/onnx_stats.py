"""Facts read from an ONNX graph: inputs/outputs, op histogram, parameter count and MACs.

MACs are counted for the compute-heavy ops (Conv, ConvTranspose, Gemm, MatMul) at batch 1, from
shapes inferred by ``onnx.shape_inference``; symbolic dimensions (a dynamic batch) count as 1.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


def _dims(type_proto) -> list[int | str] | None:
    """Shape of a tensor type: ints for static dims, the symbol (or '?') for dynamic ones."""
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _static(shape: list[int | str] | None) -> list[int] | None:
    """Replace symbolic dims by 1 (batch-1 counting); None when the shape is unknown."""
    if shape is None:
        return None
    return [d if isinstance(d, int) else 1 for d in shape]


def tensor_infos(model) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) as ``{"name", "shape", "dtype"}`` dicts of the graph's real inputs."""
    import onnx

    inits = {i.name for i in model.graph.initializer}

    def info(v) -> dict[str, Any]:
        elem = v.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "unknown"
        return {"name": v.name, "shape": _dims(v.type), "dtype": dtype}

    inputs = [info(v) for v in model.graph.input if v.name not in inits]
    return inputs, [info(v) for v in model.graph.output]


def count_params(model) -> int:
    """Number of floating-point weight elements in the graph's initializers and Constant nodes."""
    total = sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in FLOAT_TYPES)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type in FLOAT_TYPES:
                    total += math.prod(attr.t.dims)
    return int(total)


def op_histogram(model) -> dict[str, int]:
    """How many nodes of each op type the main graph has, most frequent first."""
    counts = Counter(node.op_type for node in model.graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _shape_table(model) -> dict[str, list[int]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference is best effort for counting
        inferred = model
    table: dict[str, list[int]] = {}
    graph = inferred.graph
    for v in list(graph.input) + list(graph.value_info) + list(graph.output):
        shape = _static(_dims(v.type))
        if shape is not None:
            table[v.name] = shape
    for t in graph.initializer:
        table[t.name] = list(t.dims)
    return table


def _attr(node, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_macs(node, shapes: dict[str, list[int]]) -> int:
    def shape(i: int, outputs: bool = False) -> list[int] | None:
        names = node.output if outputs else node.input
        return shapes.get(names[i]) if len(names) > i and names[i] else None

    op = node.op_type
    if op in ("Conv", "ConvTranspose"):
        x, w, y = shape(0), shape(1), shape(0, outputs=True)
        if not w:
            return 0
        kernel = math.prod(w[2:])
        if op == "Conv" and y:
            return math.prod(y) * w[1] * kernel  # w: (Cout, Cin/groups, k...)
        if op == "ConvTranspose" and x:
            return math.prod(x) * w[1] * kernel  # w: (Cin, Cout/groups, k...)
        return 0
    if op == "Gemm":
        a, y = shape(0), shape(0, outputs=True)
        if not a or not y:
            return 0
        k = a[0] if _attr(node, "transA", 0) else a[-1]
        return math.prod(y) * k
    if op == "MatMul":
        a, y = shape(0), shape(0, outputs=True)
        if not a or not y:
            return 0
        return math.prod(y) * a[-1]
    return 0


def count_macs(model) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul nodes at batch 1."""
    shapes = _shape_table(model)
    return int(sum(_node_macs(node, shapes) for node in model.graph.node))


def graph_summary(model) -> dict[str, Any]:
    """Inputs, outputs, opset, op histogram, params and MACs of an ``onnx.ModelProto``."""
    inputs, outputs = tensor_infos(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "opset": opset,
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": inputs,
        "outputs": outputs,
        "nodes": len(model.graph.node),
        "ops": op_histogram(model),
        "params": count_params(model),
        "macs": count_macs(model),
    }
