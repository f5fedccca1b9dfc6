"""Rank what to move back to FP32, from the error quantization adds inside the graph.

Two views, picked from the quantized ONNX model the backend provides:

* **QDQ models** (INT8): every activation ``QuantizeLinear → DequantizeLinear`` pair is scored by
  the relative error its scale/zero point add to the FP32 tensor (``‖DQ(Q(t)) − t‖ / ‖t‖`` per
  channel, averaged, on a few samples), so error inherited from upstream does not count.  A pair disappears only when its
  producer *and* every consumer stay in FP32 (ONNX Runtime shares one pair between them), so each
  pair maps to that group of nodes.
* **Other models** (FP16): each candidate node is scored by the error of its output minus the
  error of its input against the FP32 model, and forms a group of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from medge.runtimes.ort import ort_session


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
    exposed = _with_outputs(model, names)
    sess = ort_session(exposed.SerializeToString(), optimize=False, label="the model with its activations exposed")
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


def _fake_quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    info = np.iinfo(zero_point.dtype)
    scale = scale.astype(np.float64)
    zp = zero_point.astype(np.float64)
    if scale.ndim == 1 and scale.size > 1 and x.ndim >= 2:  # per-channel on axis 1
        shape = [1, -1] + [1] * (x.ndim - 2)
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    q = np.clip(np.round(x / scale) + zp, info.min, info.max)
    return ((q - zp) * scale).astype(np.float32)


def _channel_error(values: list[np.ndarray], scale: np.ndarray, zero_point: np.ndarray) -> float:
    """Mean over channels (axis 1) of the relative error one Q/DQ pair adds to FP32 values.

    Per channel, so that one huge-range channel wiping out all the small ones is not hidden by
    the norm of the huge one.
    """
    errors = []
    for x in values:
        dq = _fake_quantize(x, scale, zero_point)
        if x.ndim >= 2 and x.shape[1] > 1:
            axes = tuple(i for i in range(x.ndim) if i != 1)
            num = np.sqrt(((dq - x) ** 2).sum(axis=axes))
            den = np.sqrt((x ** 2).sum(axis=axes))
            live = den > 0
            errors.append(float(np.mean(num[live] / den[live])) if live.any() else 0.0)
        else:
            errors.append(float(np.linalg.norm(dq - x) / (np.linalg.norm(x) + 1e-12)))
    return float(np.mean(errors)) if errors else float("nan")


def _qdq_groups(fp32, quant, feeds_list) -> list[dict]:
    from onnx import numpy_helper

    known_nodes = {n.name for n in fp32.graph.node}
    fp32_tensors = {t for n in fp32.graph.node for t in n.output}
    initializers = {i.name: i for i in quant.graph.initializer}
    producer = {t: n for n in quant.graph.node for t in n.output}
    consumers: dict[str, list] = {}
    for n in quant.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    pairs = []  # (FP32 tensor name, Q node, nodes to keep in FP32)
    for q in quant.graph.node:
        if q.op_type != "QuantizeLinear" or q.input[0] in initializers or q.input[0] not in producer:
            continue
        if len(q.input) < 3 or q.input[1] not in initializers or q.input[2] not in initializers:
            continue
        for dq in consumers.get(q.output[0], []):
            if dq.op_type != "DequantizeLinear":
                continue
            group = [producer[q.input[0]].name] + [c.name for c in consumers.get(dq.output[0], [])]
            nodes = sorted({g for g in group if g in known_nodes})
            tensor = next((t for t in (q.input[0], dq.output[0]) if t in fp32_tensors), None)
            if nodes and tensor:
                pairs.append((tensor, q, nodes))
    values = _run_exposed(fp32, sorted({p[0] for p in pairs}), feeds_list)
    ranked = []
    for tensor, q, nodes in pairs:
        if tensor in values:
            scale = numpy_helper.to_array(initializers[q.input[1]])
            zero_point = numpy_helper.to_array(initializers[q.input[2]])
            ranked.append({"tensor": tensor, "score": round(_channel_error(values[tensor], scale, zero_point), 6),
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
        ranked = _qdq_groups(fp32, quant, feeds_list)
    else:
        ranked = _node_groups(fp32, quant, candidates, feeds_list)
    ranked.sort(key=lambda r: -(r["score"] if np.isfinite(r["score"]) else -1.0))
    return ranked
