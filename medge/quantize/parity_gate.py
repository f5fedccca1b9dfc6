"""The INT8 parity and metric gates shared by `medge quantize`'s ladder and every compile recipe:
does the quantized or compiled artifact still compute what the FP32 ONNX model computes?

* `parity_check`: the artifact against ONNX Runtime FP32 on the calibration samples (or seeded
  random inputs when there are none): max abs/rel difference, cosine similarity per sample and
  Pearson r per output channel across the samples.
* `int8_parity` + `gate_with_parity`: the one INT8 rule of every recipe (TensorRT, OpenVINO,
  ONNX Runtime, ARM, LiteRT). The INT8 artifact must keep ``min_cosine >= INT8_MIN_COSINE`` per
  sample (samples with a near-zero output excepted) and ``min_pearson >= INT8_MIN_PEARSON`` per
  output channel (unless that channel's error is negligible) and every channel's RMS error
  ≤ ``INT8_MAX_CHANNEL_ERROR`` of its RMS; without a metric gate (``--eval`` +
  ``--max-drop``) this parity decides, so a collapsed INT8 model is refused.
* `metric_gate`: the clinical metric (AUROC, Dice, Pearson…) of both models on the evaluation
  split, the drop with its bootstrap 95 % CI, and pass/fail against ``max_drop``: the one
  `medge.evaluate.gate.Gate`.

Artifacts are run through `medge.runtimes.open_runtime`, with int8 I/O (de)quantized through the
tensor's (scale, zero_point) and channel-last I/O transposed back to the ONNX layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.common.errors import DataError
from medge.evaluate.gate import Gate
from medge.evaluate.metrics import default_metric_for_task
from medge.evaluate.parity import compare_outputs, cosine
from medge.calibration import load_data_for_onnx, onnx_input
from medge.calibration.multi_input import default_feed, graph_inputs
from medge.common.metadata import read_metadata
from medge.runtimes import open_runtime
from medge.runtimes.base import dequantize_output, quantize_input
from medge.runtimes.feeds import adapt_inputs

# A runner takes one model-ready input (single-input models) or a feed dict {input name: array}
# (models with several inputs, e.g. image + click prompt) and returns the outputs in ONNX order.
Runner = Callable[[Any], list[np.ndarray]]
PARITY_SAMPLES = 8
EVAL_SAMPLES = 300
# The INT8 parity rule (artifact vs FP32 ONNX on PARITY_SAMPLES calibration samples).  Cosine per
# sample catches outputs whose pattern breaks; it is 1.0 whenever an output has one value (a
# single-logit classifier), so the Pearson r of each output channel across the samples (and its
# positions) checks that the INT8 output still moves with the FP32 one from input to input.
# Healthy zoo INT8 models score min cosine ≥ 0.938 (ECG on ORT; 0.942 for the lesion U-Net's sigmoid
# masks on OpenVINO) and Pearson ≥ 0.923 on 8 samples; the collapsed outlier net scores Pearson
# ≤ 0.63 (cosine 0.33 on ORT, 0.946 on OpenVINO).  The limits leave ~0.04 / ~0.12 of room on
# both sides for other CPUs' int8 kernels (AVX2, AVX-512 VNNI).
INT8_MIN_COSINE = 0.9
INT8_MIN_PEARSON = 0.8
# A channel fails the Pearson check only when its RMS error is also above this fraction of its RMS:
# an output that barely varies between inputs (an untrained net's sigmoids, 0.5 ± 0.002) cannot be
# tracked by int8 steps, yet stays within 1 % of FP32.
PEARSON_MIN_ERROR = 0.05
COSINE_MIN_NORM = 0.1  # per-sample cosine is judged on samples whose FP32 output norm ≥ this × the median
# Largest RMS error of one output channel over all samples, as a fraction of that channel's RMS:
# healthy zoo INT8 models ≤ 0.064, the collapsed outlier net ≥ 1.0; ecg-3to12 (0.26 OpenVINO,
# 0.43 ORT, 0.47 TensorRT Q/DQ) is refused without a metric gate on every recipe.
INT8_MAX_CHANNEL_ERROR = 0.2
INT8_LIMITS: dict[str, float | None] = {"rel_tol": None, "min_cosine": INT8_MIN_COSINE, "min_pearson": INT8_MIN_PEARSON,
                                        "max_channel_error": INT8_MAX_CHANNEL_ERROR}
TOLERANCE_FLAGS = {"min_cosine": "--min-cosine", "max_channel_error": "--max-channel-error", "atol": "--atol",
                   "rtol": "--rtol"}


def int8_limits(tolerances: dict[str, float | None] | None) -> tuple[dict[str, float | None], list[str]]:
    """The INT8 parity limits with the user's tolerances (``min_cosine``, ``max_channel_error``,
    ``atol``, ``rtol``; None: the default) applied, and a WARNING line for each one looser than the default.

    ``--atol/--rtol`` (Polygraphy's meaning: every element within ``atol + rtol·|FP32|``) replace the
    statistical checks that were not set explicitly.
    """
    given = {k: v for k, v in (tolerances or {}).items() if v is not None}
    unknown = set(given) - set(TOLERANCE_FLAGS)
    if unknown:
        raise ValueError(f"unknown parity tolerance(s) {sorted(unknown)}")
    limits = dict(INT8_LIMITS)
    warnings = []
    if "atol" in given or "rtol" in given:
        limits.update(min_cosine=None, min_pearson=None, max_channel_error=None)
        limits.update(atol=given.get("atol", 0.0), rtol=given.get("rtol", 0.0))
        replaced = [f"{TOLERANCE_FLAGS[k]} {INT8_LIMITS[k]}" for k in ("min_cosine", "max_channel_error") if k not in given]
        if replaced:
            warnings.append(f"--atol/--rtol replace the default INT8 parity checks ({', '.join(replaced)}, "
                            f"channel Pearson r {INT8_MIN_PEARSON}): the artifact is judged element-wise only")
    for key, default, looser in (("min_cosine", INT8_MIN_COSINE, lambda v, d: v < d),
                                 ("max_channel_error", INT8_MAX_CHANNEL_ERROR, lambda v, d: v > d)):
        if key in given:
            limits[key] = given[key]
            if looser(given[key], default):
                warnings.append(f"{TOLERANCE_FLAGS[key]} {given[key]:g} is looser than the default {default:g}: "
                                "an INT8 artifact that drifts that far from FP32 passes the parity gate")
    return limits, warnings


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
        data = load_data_for_onnx(source, onnx_path, n=n, split=split)
        if len(data) == 0:
            raise DataError(f"no usable samples in '{source}' for {onnx_path.name}; check the source path and format")
        inputs = [_sample(feeds) for feeds in data]
        return ReferenceData(inputs, {"source": source, "sha256": data.sha256, "n": len(data), "split": split})

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
    rt = open_runtime(onnx_path, "onnxruntime")
    name, out_names = rt.inputs()[0].name, [o.name for o in rt.outputs()]

    def run(x: Any) -> list[np.ndarray]:
        outputs = rt.infer(x if isinstance(x, dict) else {name: x})
        return [np.asarray(outputs[n], dtype=np.float32) for n in out_names]

    return run


def artifact_runner(artifact: Path, runtime: str | None = None, *, channel_last: bool = False, **options: Any) -> Runner:
    """Run a compiled artifact on this host's CPU with NCHW/NCL float32 inputs and outputs."""
    rt = open_runtime(artifact, runtime=runtime, device="cpu", **options)
    in_infos, out_infos = rt.inputs(), rt.outputs()
    in_info = in_infos[0]

    def run(x: Any) -> list[np.ndarray]:
        if isinstance(x, dict):  # several inputs: matched by position (runtimes may rename them)

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


def _channel_rows(outputs: list[np.ndarray]) -> np.ndarray:
    """(channels, samples × positions) of one output over the samples; channels are axis 1."""
    stacked = np.stack(outputs).astype(np.float64)  # (samples, *output shape)
    if stacked.ndim < 3:
        return stacked.reshape(1, -1)
    return np.moveaxis(stacked, 2, 0).reshape(stacked.shape[2], -1)


def channel_pearson(refs: list[np.ndarray], gots: list[np.ndarray]) -> list[tuple[float, float]]:
    """(Pearson r, RMS error / RMS of the reference) of each output channel, over all samples and positions.

    Channels whose reference is constant carry nothing to correlate and are left out; a constant
    candidate against a varying reference scores r = 0.
    """
    values = []
    for r, g in zip(_channel_rows(refs), _channel_rows(gots)):
        rc, gc = r - r.mean(), g - g.mean()
        nr, ng = float(np.sqrt(rc @ rc)), float(np.sqrt(gc @ gc))
        if nr <= 1e-9 * max(1.0, float(np.abs(r).max())) * np.sqrt(r.size):
            continue
        error = float(np.sqrt(np.mean((r - g) ** 2)) / max(float(np.sqrt(np.mean(r ** 2))), 1e-12))
        values.append((0.0 if ng == 0 else float(rc @ gc / (nr * ng)), error))
    return values


def _judged_cosines(refs: list[np.ndarray], gots: list[np.ndarray]) -> tuple[list[float], list[float]]:
    """(cosines of the samples whose FP32 output norm is at least `COSINE_MIN_NORM` × the median, all cosines).

    A near-zero output (an empty segmentation mask: sigmoid ≈ 0 everywhere) has no direction to
    compare, so its cosine measures only the int8 rounding noise; `channel_pearson` still covers it.
    """
    cosines = [cosine(r, g) for r, g in zip(refs, gots)]
    norms = [float(np.linalg.norm(r)) for r in refs]
    floor = COSINE_MIN_NORM * float(np.median(norms))
    return [c for c, n in zip(cosines, norms) if n >= floor and n > 0], cosines


def parity_check(reference: Runner, candidate: Runner, inputs: Sequence[np.ndarray], *,
                 rel_tol: float | None, min_cosine: float | None = None,
                 min_pearson: float | None = None, max_channel_error: float | None = None,
                 atol: float | None = None, rtol: float | None = None) -> dict[str, Any]:
    """Compare `candidate` with `reference` on `inputs`.

    ``max_rel_diff`` is the max abs difference over the reference output's range (per sample);
    ``max_rel_diff_vs_range`` over the output's range across all samples.  ``min_cosine`` is the
    lowest per-sample cosine over the samples whose output is not near zero (`_judged_cosines`;
    ``min_cosine_all_samples`` includes them).  ``min_pearson`` is the lowest per-channel Pearson r
    across the samples (`channel_pearson`); a channel is off (fails) when r < ``min_pearson`` and its
    RMS error exceeds `PEARSON_MIN_ERROR` of its RMS; ``max_channel_error`` bounds every channel's
    RMS error / RMS; with ``atol``/``rtol`` every element must lie within ``atol + rtol·|reference|``.
    ``passed`` is None when no tolerance is given
    (informative only); ``failed`` names every check that failed.
    """
    per_output: list[tuple[list[np.ndarray], list[np.ndarray]]] = []
    for x in inputs:
        ref, got = reference(x), candidate(x)
        if len(ref) != len(got):
            raise DataError(f"the artifact has {len(got)} outputs, the ONNX model {len(ref)}")
        if not per_output:
            per_output = [([], []) for _ in ref]
        for k, (r, g) in enumerate(zip(ref, got)):
            if r.size != g.size:
                raise DataError(f"artifact output of shape {list(g.shape)} does not match ONNX output {list(r.shape)}")
            per_output[k][0].append(r)
            per_output[k][1].append(g.reshape(r.shape))
    max_abs, max_rel, vs_range = 0.0, 0.0, []
    outside = 0  # samples with an element outside atol + rtol·|reference|
    cosines: list[float] = []
    all_cosines: list[float] = []
    pearsons: list[tuple[float, float]] = []
    for refs, gots in per_output:
        for r, g in zip(refs, gots):
            compared = compare_outputs(r, g, atol=None if atol is None and rtol is None else (atol or 0.0),
                                       rtol=rtol or 0.0)
            diff = compared.max_abs
            outside += compared.within_tolerance is False
            span = max(float(r.max() - r.min()), float(np.abs(r).max()), 1e-6)
            max_abs, max_rel = max(max_abs, diff), max(max_rel, diff / span)
        judged, every = _judged_cosines(refs, gots)
        cosines += judged
        all_cosines += every
        pearsons += channel_pearson(refs, gots)
        vs_range.append(float(np.abs(np.stack(refs) - np.stack(gots)).max()) / max(float(np.ptp(np.stack(refs))), 1e-12))
    checks: dict[str, bool] = {}
    if rel_tol is not None:
        checks[f"max relative difference {max_rel:.3g} > {rel_tol}"] = max_rel <= rel_tol
    if min_cosine is not None and cosines:
        checks[f"min cosine {min(cosines):.4f} < {min_cosine}"] = min(cosines) >= min_cosine
    rs = [r for r, _ in pearsons]
    off = [(r, e) for r, e in pearsons if min_pearson is not None and r < min_pearson and e > PEARSON_MIN_ERROR]
    if min_pearson is not None and pearsons:
        worst = min(off, default=(min(rs), 0.0))
        checks[f"min channel Pearson r across samples {worst[0]:.4f} < {min_pearson} "
               f"(RMS error {worst[1]:.0%} of the output)"] = not off
    if atol is not None or rtol is not None:
        checks[f"{outside} of {len(inputs)} sample(s) outside atol {atol or 0:g} + rtol {rtol or 0:g}·|FP32|"] = not outside
    worst_error = max((e for _, e in pearsons), default=None)
    if max_channel_error is not None and worst_error is not None:
        checks[f"max channel RMS error {worst_error:.0%} of the output > {max_channel_error:.0%}"] = \
            worst_error <= max_channel_error
    return {
        "kind": "parity-vs-fp32-onnx",
        "samples": len(inputs),
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "min_cosine": min(cosines) if cosines else None,
        "mean_cosine": float(np.mean(all_cosines)) if all_cosines else None,
        "min_cosine_all_samples": min(all_cosines) if all_cosines else None,
        "cosine_samples_near_zero": len(all_cosines) - len(cosines),
        "min_pearson": min(rs) if rs else None,
        "channels_correlated": len(pearsons),
        "channels_off": len(off),
        "max_channel_rms_error": worst_error,
        "max_rel_diff_vs_range": max(vs_range) if vs_range else None,
        "rel_tol": rel_tol,
        "min_cosine_required": min_cosine,
        "min_pearson_required": min_pearson,
        "max_channel_rms_error_allowed": max_channel_error,
        "atol": atol,
        "rtol": rtol,
        "failed": [text for text, ok in checks.items() if not ok],
        "passed": all(checks.values()) if checks else None,
    }


def int8_parity(onnx_path: Path, calib_source: str | None, candidate: Runner,
                limits: dict[str, float | None] | None = None, **info: Any) -> dict[str, Any]:
    """The INT8 parity of every recipe: `candidate` vs the FP32 ONNX on `PARITY_SAMPLES` calibration
    samples, against `limits` (default `INT8_LIMITS`, see `int8_limits`); `info` is recorded with the result."""
    data = load_inputs(onnx_path, calib_source, n=PARITY_SAMPLES)
    parity = parity_check(onnx_runner(onnx_path), candidate, data.inputs, **(limits or INT8_LIMITS))
    parity.update(info, data=data.info)
    return parity


def gate_with_parity(gate: dict[str, Any] | None, parity: dict[str, Any]) -> dict[str, Any]:
    """The INT8 gate with its parity: a metric gate that ran (``--eval`` + ``--max-drop``) decides;
    without one the parity decides, so `compile_model` writes no bundle whose parity failed."""
    gate = {**(gate or {"kind": "parity"}), "parity": parity}
    if gate.get("passed") is None:
        gate["passed"] = parity["passed"]
    return gate


def metric_gate(onnx_path: Path, task: str, candidate: Runner, eval_source: str, max_drop: float | None,
                n: int = EVAL_SAMPLES) -> tuple[dict[str, Any], dict[str, Any]]:
    """Clinical metric of the FP32 ONNX and of `candidate` on the evaluation split.

    Returns (gate, evaluation_info); the gate uses the keys of the quantize gate (name, reference,
    quantized, drop, ci95, n_eval, max_drop, passed, fp32_fallback_nodes).
    """
    data = load_data_for_onnx(eval_source, onnx_path, n=n, split="eval")
    targets = data.targets()
    if targets is None or len(data) == 0:
        raise DataError(f"evaluation source '{eval_source}' has no labels/targets; the gate needs them")
    reference = onnx_runner(onnx_path)
    inputs = [_sample(feeds) for feeds in data]
    ref_list = [reference(x)[0] for x in inputs]
    ref_out = np.concatenate(ref_list)
    q_out = np.concatenate([candidate(x)[0].reshape(r.shape) for x, r in zip(inputs, ref_list)])
    result = Gate(default_metric_for_task(task), max_drop).check(ref_out, q_out, targets)
    gate = {**result.to_dict("quantized"), "fp32_fallback_nodes": []}
    return gate, {"source": eval_source, "sha256": data.sha256, "n": len(data)}
