"""The INT8 gate's ladder steps for the ONNX-in backends (ONNX Runtime, OpenVINO/NNCF, INC).

Each rung quantizes the prepared ONNX model with the backend, keeping the rung's nodes in FP32
and widening its activation tensors to 16 bits, and judges the artifact by the task metric
(`evaluate.Gate`, FP32 vs quantized outputs on the evaluation set, paired-bootstrap CI) or, with
no metric gate, by its parity with FP32 on the target's numerics (`quantize.parity_gate`).

After a failed first rung (`OnnxSteps.stages`): the backend's whole-model schemes (NNCF's
transformer mode; the best one stays in use), then the quantization points ranked by the error
each adds (`quantize.sensitivity`), then, where the backend can, the worst 1, 2, 4 … activation
tensors to 16 bits (weights stay int8, so the file stays INT8-sized), then the worst 1, 2, 4 …
node groups to FP32 (the 16-bit tensors kept), then the modules (name scopes) holding the worst
groups, whole, to FP32 (`quantize.fallback_scopes`).  The climb is `medge.quantize.ladder.climb`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medge.evaluate.gate import Gate
from medge.quantize.backends.base import QuantBackend, QuantOptions
from medge.quantize.config import QuantizeConfig
from medge.quantize.fallback_scopes import module_scopes, scope_nodes
from medge.quantize.ladder import Attempt, LadderSteps, Rung, Stage
from medge.quantize.sensitivity import rank_fallback_groups
from medge.runtimes.model_file import load_onnx
from medge.quantize.parity_gate import PARITY_SAMPLES, artifact_runner, load_inputs, onnx_runner, parity_check
from medge.runtimes import open_runtime
from medge.runtimes.base import dequantize_output, quantize_input

log = logging.getLogger(__name__)

RANKING_SAMPLES = 8
PARITY_FIGURES = ("min_cosine", "min_pearson", "max_channel_rms_error", "failed")


def outputs(artifact: Path, runtime: str, dataset: Any, options: dict[str, Any]) -> np.ndarray:
    """Primary output of `artifact` over every sample of `dataset`, stacked on the batch axis."""
    with open_runtime(artifact, runtime, **options) as rt:
        inputs = {t.name: t for t in rt.inputs()}
        primary = rt.outputs()[0]
        results = []
        for feeds in dataset:
            typed = {k: quantize_input(v, inputs[k]) for k, v in feeds.items()}
            results.append(dequantize_output(rt.infer(typed)[primary.name], primary))
    return np.concatenate(results, axis=0)


def _cosine_text(cosine: float | None) -> str:
    return f"min cosine {cosine:.4f}" if cosine is not None else "parity measured"


class OnnxSteps(LadderSteps):
    """Quantize with a `QuantBackend` and judge by the metric gate or by parity; state of one run."""

    label = "int8 ladder"

    def __init__(self, config: QuantizeConfig, backend: QuantBackend, prepared: Path, workdir: Path) -> None:
        self.config, self.backend, self.prepared, self.workdir = config, backend, prepared, workdir
        self.options = QuantOptions(precision=config.precision, calib_method=config.calib_method,
                                    keep_io_fp32=config.keep_io_fp32, trt_compatible=config.trt_compatible,
                                    extra=dict(config.options))
        self.scheme_options: dict[str | None, QuantOptions] = {None: self.options}
        self.calib_feeds: list[dict[str, np.ndarray]] = []
        self.eval_data: Any = None
        self.targets: np.ndarray | None = None
        self.reference: np.ndarray | None = None
        self.reference_metric: float | None = None
        self.metric_name: str | None = None
        self.always_fp32: list[str] = []
        self.scheme: str | None = None  # the backend's recovery scheme in use (None: its default)
        self.parity_inputs: list[Any] | None = None  # set when parity judges the attempts (no metric gate)
        self.parity_reference: Any = None
        self.last_parity: dict[str, Any] | None = None
        self.artifacts: dict[int, Path] = {}  # attempt index → its artifact in `workdir`
        self.sensitivity: list[dict[str, Any]] = []  # the ranked fallback groups, once ranked

    def _eval_options(self) -> dict[str, Any]:
        """Runtime options for scoring an attempt: the target's numerics (`config.runtime_options`,
        e.g. ``emulate_qdq`` for the ideal integer simulation), and a TensorRT-bound Q/DQ graph is always
        emulated (see ``runtimes/ort.py``), since this host's int8 kernels are not the engine's."""
        options = dict(self.config.runtime_options) if self.backend.runtime == "onnxruntime" else {}
        if self.config.trt_compatible and self.backend.runtime == "onnxruntime":
            options["emulate_qdq"] = True
        return options

    def judge_by_parity(self, model: Path) -> None:
        """Judge every attempt by its INT8 parity with FP32 (no metric gate): the calibration samples
        and limits of `medge.quantize.parity_gate.int8_parity`, so the recipe's check agrees."""
        self.parity_inputs = load_inputs(model, self.config.calib_source, n=PARITY_SAMPLES).inputs
        self.parity_reference = onnx_runner(model)

    def parity(self, artifact: Path) -> dict[str, Any]:
        """Parity of `artifact` vs FP32 on the target's numerics, against `config.parity_limits`."""
        runner = artifact_runner(artifact, self.backend.runtime, **{**self.backend.reference_options, **self._eval_options()})
        return parity_check(self.parity_reference, runner, self.parity_inputs, **(self.config.parity_limits or {}))

    def run(self, rung: Rung, index: int) -> Attempt:
        """Quantize the prepared model with `rung`'s nodes in FP32 and tensors at 16 bits, and judge it."""
        out = self.workdir / f"attempt{index}{self.backend.artifact_suffix}"
        keep = self.always_fp32 + [n for n in rung.floats if n not in self.always_fp32]
        options = replace(self.scheme_options[rung.scheme], int16_tensors=list(rung.int16))
        self.backend.quantize(self.prepared, out, self.calib_feeds, keep, options)
        self.artifacts[index] = out
        attempt = Attempt(index, rung.action, list(rung.floats), list(rung.int16), rung.scheme)
        if self.eval_data is not None:
            q_out = outputs(out, self.backend.runtime, self.eval_data, self._eval_options())
            rule = Gate(self.metric_name, self.config.max_drop, n_boot=self.config.n_boot, seed=self.config.seed)
            result = rule.check(self.reference, q_out, self.targets, reference_value=self.reference_metric)
            attempt.passed = result.passed
            attempt.gate = {"kind": "metric", "metric": result.value, "drop": result.drop, "ci95": result.ci95,
                            "passed": result.passed, "summary": f"{self.metric_name} drop {result.drop:.4g}",
                            "n_eval": result.n, "precision_note": result.precision_note()}
        if self.parity_inputs is not None:
            parity = self.parity(out)
            attempt.passed = parity["passed"] is not False
            figures = {k: parity[k] for k in PARITY_FIGURES}
            attempt.gate = {**attempt.gate, "kind": "parity", "passed": attempt.passed, "parity": figures,
                            "summary": "; ".join(parity["failed"]) or _cosine_text(parity["min_cosine"])}
            self.last_parity = parity
        return attempt

    def stages(self, attempts: list[Attempt]) -> Iterator[Rung | Stage]:
        """Schemes, then 16-bit tensors, FP32 node groups and FP32 modules, worst first (module docstring)."""
        budget = self.config.max_fallback_steps
        if budget <= 0 or not self.backend.supports_fallback(self.options):
            return
        graph = load_onnx(self.prepared, check=False)
        schemes = self.backend.recovery_schemes(graph, self.options)
        for label, extra in schemes:  # whole-model alternatives first
            self.scheme_options[label] = replace(self.options, extra={**self.options.extra, **extra})
            yield Rung(f"scheme {label}", scheme=label)
        if schemes:  # none passed: node fallback starts from the best of them (the first try's on a tie)
            best, self.scheme = float("inf"), None
            for attempt in attempts:
                drop = attempt.gate.get("drop")
                if drop is not None and drop < best:
                    best, self.scheme = drop, attempt.scheme
            self.options = self.scheme_options[self.scheme]
        candidates = self.backend.candidate_nodes(graph, self.options)
        proxy = self.backend.sensitivity_proxy(self.prepared, self.artifacts[0], self.workdir, self.calib_feeds,
                                               self.options)
        feeds = self.calib_feeds[:RANKING_SAMPLES] or list(self.eval_data)[:RANKING_SAMPLES]
        ranked = rank_fallback_groups(self.prepared, proxy, candidates, feeds)
        ranked = [g for g in ranked if set(g["nodes"]) - set(self.always_fp32)]
        self.sensitivity = ranked
        tensors = list(dict.fromkeys(g["tensor"] for g in ranked))
        int16: list[str] = []

        def widen(k: int) -> Rung:
            nonlocal int16
            int16 = tensors[:k]
            return Rung(f"worst {k} activation(s) to 16 bits", int16=int16, scheme=self.scheme)

        if self.config.int16_fallback and self.backend.supports_int16_activations(self.options):
            yield Stage(len(tensors), widen, budget)

        def groups(k: int) -> Rung:
            exclude: list[str] = []
            for group in ranked[:k]:
                exclude += [n for n in group["nodes"] if n not in exclude and n not in self.always_fp32]
            return Rung(f"worst {k} node group(s) to FP32", int16=int16, floats=exclude, scheme=self.scheme)

        yield Stage(len(ranked), groups, budget)
        names = [n.name for n in graph.graph.node if n.name]
        scopes = module_scopes(names, ranked)

        def modules(k: int) -> Rung:  # every node of the module: its Mul/Add/Transpose too
            exclude = [n for n in scope_nodes(scopes[:k], names) if n not in self.always_fp32]
            return Rung(f"worst {k} module(s) to FP32", int16=int16, floats=exclude, scheme=self.scheme)

        yield Stage(len(scopes), modules, budget)
