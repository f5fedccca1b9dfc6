"""Facts read from an ONNX graph: inputs/outputs, op histogram, parameter count and MACs.

MACs are counted for the compute-heavy ops (Conv, ConvTranspose, Gemm, MatMul, Einsum) at batch 1, from
shapes inferred with the graph inputs' symbolic dimensions (a dynamic batch) fixed to 1.
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


def _batch_one(model):
    """A copy of `model` whose graph inputs have every symbolic dim fixed to 1 (batch-1 counting), so
    that shape inference resolves the dims derived from the batch (e.g. a token count ``1 + n``)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.dim_value = 1
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:  # outputs are re-inferred from the fixed inputs
        if value.type.HasField("tensor_type"):
            value.type.tensor_type.ClearField("shape")
    return fixed


def _infer(model):
    """`model` with inferred shapes: ONNX Runtime's symbolic inference, which also follows shape
    arithmetic through Where/Equal (torch's ``expand(b, -1, -1)``), else ONNX's own."""
    import onnx

    fixed = _batch_one(model)
    inferred = symbolic_shapes(fixed)
    if inferred is not None:
        return inferred
    try:
        return onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # noqa: BLE001
        return model


def symbolic_shapes(model, auto_merge: bool = True):
    """ONNX Runtime's symbolic shape inference of `model`, or None when it cannot infer every shape.

    This is the loop of ``SymbolicShapeInference.infer_shapes`` without its failure branch, which
    saves the half-inferred model as ``sym_shape_infer_temp.onnx`` (+ external data) into the
    current working directory: a file the user never asked for.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inference = SymbolicShapeInference(2**31 - 1, auto_merge, False, 0)
    try:
        inference._preprocess(model)
        done = False
        while inference.run_:
            done = inference._infer_impl()
        inference._update_output_from_vi()
    except Exception:  # noqa: BLE001 - an op it cannot follow: no complete inference
        return None
    return inference.out_mp_ if done else None


def _shape_table(model) -> dict[str, list[int]]:
    graph = _infer(model).graph
    table: dict[str, list[int]] = {}
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
    if op == "Einsum":
        equation = _attr(node, "equation", b"")
        equation = equation.decode() if isinstance(equation, bytes) else str(equation)
        return _einsum_macs(equation, [shape(i) for i in range(len(node.input))])
    return 0


def _einsum_macs(equation: str, shapes: list[list[int] | None]) -> int:
    """MACs of a contraction of two or more operands: the product of every index's size
    (``bc,bchw->bhw`` at b=1, c=16, 64×64 is 16·64·64); 0 for a single operand or unknown shapes."""
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(terms) < 2 or len(terms) != len(shapes) or any(s is None for s in shapes):
        return 0
    sizes: dict[str, int] = {}
    for term, dims in zip(terms, shapes):
        if "..." in term:  # the ellipsis dims broadcast right-aligned: one placeholder per position from the end
            head, tail = term.split("...")
            covered = len(dims) - len(head) - len(tail)
            term = head + "".join(chr(0x2460 + covered - 1 - i) for i in range(covered)) + tail
        if len(term) != len(dims):
            return 0
        for letter, size in zip(term, dims):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def count_macs(model) -> int:
    """Multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and Einsum nodes at batch 1."""
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
