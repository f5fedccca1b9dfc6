"""Rank what to move back to FP32, from the error quantization adds inside the graph.

Two views, picked from the quantized ONNX model the backend provides:

* **QDQ models** (INT8): every activation ``QuantizeLinear → DequantizeLinear`` pair is scored by
  the relative error it adds to its tensor (``‖DQ(Q(t)) − t‖ / ‖t‖`` on a few samples, measured in
  the quantized model so inherited error does not count).  A pair disappears only when its
  producer *and* every consumer stay in FP32 (ONNX Runtime shares one pair between them), so each
  pair maps to that group of nodes.
* **Other models** (FP16): each candidate node is scored by the error of its output minus the
  error of its input against the FP32 model, and forms a group of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _with_outputs(model, names: list[str]):
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    produced = {t for n in model.graph.node for t in n.output}
    for name in names:
        if name in produced and name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    return model


def _run_exposed(model, names: list[str], feeds_list: Sequence[dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """Values of tensors `names` (those that exist) for each feeds dict, as float32."""
    import onnxruntime as ort

    exposed = _with_outputs(model, names)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(exposed.SerializeToString(), so, providers=["CPUExecutionProvider"])
    wanted = set(names)
    out_names = [o.name for o in sess.get_outputs() if o.name in wanted]
    inputs = {i.name: i.type for i in sess.get_inputs()}
    values: dict[str, list[np.ndarray]] = {n: [] for n in out_names}
    for feeds in feeds_list:
        typed = {k: v.astype(np.float16) if inputs.get(k) == "tensor(float16)" else v for k, v in feeds.items()}
        for name, value in zip(out_names, sess.run(out_names, typed)):
            values[name].append(np.asarray(value, dtype=np.float32))
    return values


def _relative_error(ref: list[np.ndarray], test: list[np.ndarray]) -> float:
    errors = [float(np.linalg.norm(t - r) / (np.linalg.norm(r) + 1e-12))
              for r, t in zip(ref, test) if r.shape == t.shape]
    return float(np.mean(errors)) if errors else float("nan")


def _qdq_groups(quant, known_nodes: set[str], feeds_list) -> list[dict]:
    initializers = {i.name for i in quant.graph.initializer}
    producer = {t: n for n in quant.graph.node for t in n.output}
    consumers: dict[str, list] = {}
    for n in quant.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    pairs = []  # (tensor before Q, tensor after DQ, nodes to keep in FP32)
    for q in quant.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in initializers or q.input[0] not in producer:
            continue
        for dq in consumers.get(q.output[0], []):
            if dq.op_type != "DequantizeLinear":
                continue
            group = [producer[q.input[0]].name] + [c.name for c in consumers.get(dq.output[0], [])]
            nodes = sorted({g for g in group if g in known_nodes})
            if nodes:
                pairs.append((q.input[0], dq.output[0], nodes))
    names = sorted({t for a, b, _ in pairs for t in (a, b)})
    values = _run_exposed(quant, names, feeds_list)
    ranked = []
    for before, after, nodes in pairs:
        if before in values and after in values:
            ranked.append({"tensor": before, "score": round(_relative_error(values[before], values[after]), 6),
                           "nodes": nodes})
    return ranked


def _node_groups(fp32, quant, candidates: list[str], feeds_list) -> list[dict]:
    nodes = {n.name: n for n in fp32.graph.node}
    pairs = {c: (nodes[c].input[0], nodes[c].output[0]) for c in candidates if c in nodes and nodes[c].input}
    tensors = sorted({t for pair in pairs.values() for t in pair})
    ref = _run_exposed(fp32, tensors, feeds_list)
    test = _run_exposed(quant, tensors, feeds_list)
    errors = {t: _relative_error(ref[t], test[t]) for t in tensors if t in ref and t in test}
    ranked = []
    for name, (tin, tout) in pairs.items():
        e_out, e_in = errors.get(tout, float("nan")), errors.get(tin, 0.0)
        score = 0.0 if np.isnan(e_out) else e_out - (0.0 if np.isnan(e_in) else e_in)
        ranked.append({"tensor": tout, "score": round(float(score), 6), "nodes": [name]})
    return ranked


def rank_fallback_groups(fp32_onnx: Path, quant_onnx: Path, candidates: list[str],
                         feeds_list: Sequence[dict[str, np.ndarray]]) -> list[dict]:
    """Groups of FP32 node names, most quantization-damaging first.

    Each entry: ``{"tensor": name, "score": relative error added, "nodes": [node names]}``.
    """
    import onnx

    fp32 = onnx.load(str(fp32_onnx))
    quant = onnx.load(str(quant_onnx))
    feeds_list = list(feeds_list)
    if any(n.op_type == "QuantizeLinear" for n in quant.graph.node):
        ranked = _qdq_groups(quant, {n.name for n in fp32.graph.node}, feeds_list)
    else:
        ranked = _node_groups(fp32, quant, candidates, feeds_list)
    ranked.sort(key=lambda r: -(r["score"] if np.isfinite(r["score"]) else -1.0))
    return ranked
