"""Shrink a quantized (QDQ) ONNX graph without changing what it computes.

QDQ quantization adds three or four long derived names per quantized tensor
(``…/Relu_output_0_QuantizeLinear_Output``) and keeps un-foldable BatchNormalization layers (e.g.
DenseNet's pre-activation BN after a Concat) in FP32 with four parameter vectors each.  In a small
model these weigh as much as the int8 weights themselves.  `compact_qdq_model`:

* stores each FP32 BatchNormalization as its affine transform (``scale' = γ/√(σ²+ε)``,
  ``bias' = β − μ·scale'``) with one shared zero-mean / unit-variance pair per channel count;
* renames internal tensors (not graph inputs/outputs) to short ids and drops their ``value_info``;
* renames the Q/DQ nodes the quantizer added (``q12``/``dq40``); the model's own node names are
  kept, because reports, fallback lists and TensorRT layer names refer to them.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _has_subgraphs(graph: Any) -> bool:
    import onnx

    kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(a.type in kinds for n in graph.node for a in n.attribute)


def share_batchnorm_statistics(graph: Any) -> int:
    """Fold each BatchNormalization's mean/variance into its scale/bias; returns how many changed.

    The rewritten node reads a shared zero mean and a variance of ``1 - ε``, so
    ``(x - 0) / √((1 - ε) + ε) · scale' + bias'`` equals the original to float rounding.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for t in node.input:
            uses[t] = uses.get(t, 0) + 1
    shared: dict[tuple[int, float], tuple[str, str]] = {}
    changed = 0
    for node in graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) != 5 or len(node.output) != 1:
            continue
        params = node.input[1:]
        if any(p not in inits or uses.get(p, 0) != 1 for p in params):
            continue
        gamma, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in params)
        if gamma.dtype.kind != "f" or gamma.ndim != 1:
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        scale = gamma / np.sqrt(var + eps)
        key = (gamma.shape[0], eps)
        if key not in shared:
            zeros = numpy_helper.from_array(np.zeros(key[0], np.float32), f"bn_mean0_{key[0]}_{len(shared)}")
            ones = numpy_helper.from_array(np.full(key[0], 1.0 - eps, np.float32), f"bn_var1_{key[0]}_{len(shared)}")
            graph.initializer.extend([zeros, ones])
            shared[key] = (zeros.name, ones.name)
        inits[params[0]].CopyFrom(numpy_helper.from_array(scale.astype(np.float32), params[0]))
        inits[params[1]].CopyFrom(numpy_helper.from_array((beta - mean * scale).astype(np.float32), params[1]))
        node.input[3], node.input[4] = shared[key]
        changed += 1
    used = {t for n in graph.node for t in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return changed


def shorten_names(graph: Any) -> None:
    """Short ids for internal tensors and for the Q/DQ nodes the quantizer added."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        if name not in names:
            candidate = f"t{len(names)}"
            while candidate in keep:
                candidate += "_"
            names[name] = candidate
        return names[name]

    for init in graph.initializer:
        init.name = short(init.name)
    counters = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in graph.node:
        node.input[:] = [short(t) for t in node.input]
        node.output[:] = [short(t) for t in node.output]
        if node.op_type in counters and node.name.endswith(node.op_type):  # added by the quantizer
            node.name = f"{'q' if node.op_type == 'QuantizeLinear' else 'dq'}{counters[node.op_type]}"
            counters[node.op_type] += 1
    del graph.value_info[:]


def compact_qdq_model(model: Any) -> bool:
    """Apply both rewrites to ``model`` (an ``onnx.ModelProto``) in place; False if it was left alone.

    Graphs with subgraphs (If/Loop/Scan) are left alone: their inner names refer to outer tensors.
    """
    if _has_subgraphs(model.graph):
        return False
    share_batchnorm_statistics(model.graph)
    shorten_names(model.graph)
    return True
