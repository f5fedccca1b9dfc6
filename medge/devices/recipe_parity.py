"""Checks shared by the OpenVINO, LiteRT and ARM recipes: does the compiled artifact still compute
what the FP32 ONNX model computes?

* `parity_check`: the artifact against ONNX Runtime FP32 on the calibration samples (or seeded
  random inputs when there are none): max abs/rel difference and cosine similarity per sample.
* `metric_gate`: the clinical metric (AUROC, Dice, Pearson…) of both models on the evaluation
  split, the drop with its bootstrap 95 % CI, and pass/fail against ``max_drop``.

Artifacts are run through `medge.runtimes.open_runtime`, with int8 I/O (de)quantized through the
tensor's (scale, zero_point) and channel-last I/O transposed back to the ONNX layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.errors import DataError

# A runner takes one model-ready input (single-input models) or a feed dict {input name: array}
# (models with several inputs, e.g. image + click prompt) and returns the outputs in ONNX order.
Runner = Callable[[Any], list[np.ndarray]]
PARITY_SAMPLES = 8
EVAL_SAMPLES = 300


@dataclass
class ReferenceData:
    """Model-ready FP32 inputs (batch 1 each) and where they came from."""

    inputs: list[Any]  # arrays (one input) or feed dicts (several inputs)
    info: dict[str, Any]


def _sample(feeds: dict[str, np.ndarray]) -> Any:
    """One input array for single-input models, the whole feed dict for multi-input ones."""
    if len(feeds) > 1:
        return {k: np.asarray(v) for k, v in feeds.items()}
    return np.asarray(next(iter(feeds.values())), dtype=np.float32)


def load_inputs(onnx_path: Path, source: str | None, n: int, split: str = "calib") -> ReferenceData:
    """`n` model-ready inputs from `source` (via medge.calibration), or seeded N(0, 1) inputs when
    `source` is None (normalised inputs are roughly standard normal)."""
    if source:
        from medge.calibration import load_data_for_onnx

        data = load_data_for_onnx(source, onnx_path, n=n, split=split)
        if len(data) == 0:
            raise DataError(f"no usable samples in '{source}' for {onnx_path.name}; check the source path and format")
        inputs = [_sample(feeds) for feeds in data]
        return ReferenceData(inputs, {"source": source, "sha256": data.sha256, "n": len(data), "split": split})
    from medge.calibration import onnx_input
    from medge.calibration.multi_input import default_feed, graph_inputs
    from medge.metadata import read_metadata

    meta = read_metadata(onnx_path)
    _, shape = onnx_input(onnx_path, meta)
    rng = np.random.default_rng(0)
    others = graph_inputs(onnx_path)[1:]
    inputs = []
    for _ in range(n):
        x = rng.standard_normal(tuple(shape)).astype(np.float32)
        if others:  # the image random, the other inputs at their declared defaults
            first = graph_inputs(onnx_path)[0].name
            x = {first: x, **{o.name: default_feed(o, meta)[0] for o in others}}
        inputs.append(x)
    return ReferenceData(inputs, {"source": "random-normal(seed=0)", "sha256": None, "n": n, "split": None})


def onnx_runner(onnx_path: Path) -> Runner:
    """Run the FP32 ONNX model on ONNX Runtime CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: [np.asarray(o, dtype=np.float32) for o in sess.run(None, x if isinstance(x, dict) else {name: x})]


def artifact_runner(artifact: Path, runtime: str | None = None, *, channel_last: bool = False, **options: Any) -> Runner:
    """Run a compiled artifact on this host's CPU with NCHW/NCL float32 inputs and outputs."""
    from medge.runtimes import open_runtime
    from medge.runtimes.base import dequantize_output, quantize_input

    rt = open_runtime(artifact, runtime=runtime, device="cpu", **options)
    in_infos, out_infos = rt.inputs(), rt.outputs()
    in_info = in_infos[0]

    def run(x: Any) -> list[np.ndarray]:
        if isinstance(x, dict):  # several inputs: matched by position (runtimes may rename them)
            from medge.runtimes.feeds import adapt_inputs

            outs = rt.infer(adapt_inputs(list(x.values()), in_infos, who=str(artifact)))
        else:
            feed = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if channel_last else x
            outs = rt.infer({in_info.name: quantize_input(feed, in_info)})
        result = []
        for info in out_infos:
            y = dequantize_output(outs[info.name], info)
            result.append(np.moveaxis(y, -1, 1) if channel_last and y.ndim >= 3 else y)
        return result

    return run


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def parity_check(reference: Runner, candidate: Runner, inputs: Sequence[np.ndarray], *,
                 rel_tol: float | None, min_cosine: float | None = None) -> dict[str, Any]:
    """Compare `candidate` with `reference` on `inputs`.

    ``max_rel_diff`` is the max abs difference over the reference output's range.  ``passed`` is
    None when neither tolerance is given (informative only).
    """
    max_abs, max_rel, cosines = 0.0, 0.0, []
    for x in inputs:
        ref, got = reference(x), candidate(x)
        if len(ref) != len(got):
            raise DataError(f"the artifact has {len(got)} outputs, the ONNX model {len(ref)}")
        for r, g in zip(ref, got):
            if r.size != g.size:
                raise DataError(f"artifact output of shape {list(g.shape)} does not match ONNX output {list(r.shape)}")
            g = g.reshape(r.shape)
            diff = float(np.abs(r - g).max())
            span = max(float(r.max() - r.min()), float(np.abs(r).max()), 1e-6)
            max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / span)
            cosines.append(_cosine(r, g))
    checks = []
    if rel_tol is not None:
        checks.append(max_rel <= rel_tol)
    if min_cosine is not None:
        checks.append(min(cosines) >= min_cosine)
    return {
        "kind": "parity-vs-fp32-onnx",
        "samples": len(inputs),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "min_cosine": min(cosines) if cosines else None,
        "mean_cosine": float(np.mean(cosines)) if cosines else None,
        "rel_tol": rel_tol,
        "min_cosine_required": min_cosine,
        "passed": all(checks) if checks else None,
    }


def metric_gate(onnx_path: Path, task: str, candidate: Runner, eval_source: str, max_drop: float | None,
                n: int = EVAL_SAMPLES) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clinical metric of the FP32 ONNX and of `candidate` on the evaluation split.

    Returns (gate, evaluation_info); the gate uses the keys of the quantize gate (name, reference,
    quantized, drop, ci95, n_eval, max_drop, passed, fp32_fallback_nodes).
    """
    from medge.calibration import load_data_for_onnx
    from medge.quantize.metrics import bootstrap_drop_ci, default_metric_for_task, metric_drop, task_metric

    data = load_data_for_onnx(eval_source, onnx_path, n=n, split="eval")
    targets = data.targets()
    if targets is None or len(data) == 0:
        raise DataError(f"evaluation source '{eval_source}' has no labels/targets; the gate needs them")
    reference = onnx_runner(onnx_path)
    inputs = [_sample(feeds) for feeds in data]
    ref_list = [reference(x)[0] for x in inputs]
    ref_out = np.concatenate(ref_list)
    q_out = np.concatenate([candidate(x)[0].reshape(r.shape) for x, r in zip(inputs, ref_list)])
    metric = default_metric_for_task(task)
    fp32_value, q_value = task_metric(metric, ref_out, targets), task_metric(metric, q_out, targets)
    drop = metric_drop(metric, fp32_value, q_value)
    ci = bootstrap_drop_ci(ref_out, q_out, targets, metric)
    gate = {
        "name": metric, "reference": fp32_value, "quantized": q_value, "drop": drop, "ci95": list(ci), "n_eval": len(data),
        "max_drop": max_drop, "passed": None if max_drop is None else bool(drop <= max_drop),
        "fp32_fallback_nodes": [],
    }
    return gate, {"source": eval_source, "sha256": data.sha256, "n": len(data)}
