"""Run the same inputs through several artifacts/runtimes and measure how far each is from the first.

Inputs are float data in the reference's layout (calibration/eval data with ``inputs``, else seeded
random normals).  Each artifact gets them by input position, transposed when its input is the
NCHW↔NHWC counterpart and quantized with its own (scale, zero_point) for int8 I/O; its outputs
are dequantized and transposed back before comparison.  Errors are over all outputs and inputs:
``max_abs_error``; ``max_rel_error`` = max |a − r| / (|r| + 1e-6); cosine similarity of the
flattened outputs; and, with targets, the task metric (medge.quantize.metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from medge.errors import DataError, MedgeError
from medge.reports import Report
from medge.runtimes.artifacts import ArtifactRef, resolve_artifact
from medge.runtimes.base import TensorInfo

REL_EPS = 1e-6


@dataclass
class CompareConfig:
    """What to compare (the first artifact is the reference) and the pass thresholds."""

    artifacts: list[str]
    inputs: str | None = None
    n: int = 16
    metric: str | None = None
    runtime_device: str | None = None
    threads: int | None = None
    seed: int = 0
    max_abs_error: float | None = None
    min_cosine: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArtifactComparison:
    """How one artifact's outputs differ from the reference's."""

    path: str
    runtime: str
    device: str
    max_abs_error: float
    max_rel_error: float
    mean_abs_error: float
    cosine: float
    metric: float | None = None
    metric_delta: float | None = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)


@dataclass
class CompareReport(Report):
    """Parity of every artifact against the first one."""

    title: ClassVar[str] = "compare"
    reference: str = ""
    reference_runtime: str = ""
    reference_metric: float | None = None
    metric_name: str | None = None
    artifacts: list[ArtifactComparison] = field(default_factory=list)
    n_inputs: int = 0
    inputs_source: str = ""
    inputs_report: dict[str, Any] = field(default_factory=dict)  # found/used/skipped of --inputs
    max_abs_error_limit: float | None = None
    min_cosine_limit: float | None = None

    @property
    def ok(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def table_rows(self) -> list[tuple[str, str]]:
        rows = [("reference", f"{self.reference} ({self.reference_runtime})"), ("inputs", f"{self.n_inputs} from {self.inputs_source}")]
        if self.metric_name:
            rows.append((f"reference {self.metric_name}", f"{self.reference_metric:.6g}" if self.reference_metric is not None else "n/a"))
        for a in self.artifacts:
            text = f"max abs {a.max_abs_error:.3g}, max rel {a.max_rel_error:.3g}, cosine {a.cosine:.6f}"
            if a.metric is not None:
                text += f", {self.metric_name} {a.metric:.6g} (Δ {a.metric_delta:+.3g})"
            text += " — PASS" if a.passed else f" — FAIL ({'; '.join(a.failures)})"
            rows.append((f"{a.path} [{a.runtime}]", text))
        return rows


def split_runtime_suffix(spec: str) -> tuple[str, str | None]:
    """``"model.onnx@openvino"`` → (``"model.onnx"``, ``"openvino"``); no known runtime after '@' → (spec, None)."""
    from medge.runtimes import RUNTIMES

    path, sep, runtime = spec.rpartition("@")
    return (path, runtime) if sep and runtime in RUNTIMES else (spec, None)


def _run_all(rt: Any, samples: list[list[np.ndarray]], label: str, ref_shapes: list[tuple[int, ...]] | None) -> list[np.ndarray]:
    """Outputs of every sample, concatenated along the batch axis, one array per output."""
    from medge.runtimes.feeds import adapt_inputs, restore_outputs

    infos = rt.outputs()
    per_output: list[list[np.ndarray]] = [[] for _ in infos]
    for sample in samples:
        outs = restore_outputs(rt.infer(adapt_inputs(sample, rt.inputs(), who=label)), infos, ref_shapes)
        for i, y in enumerate(outs):
            per_output[i].append(y)
    return [np.concatenate(ys, axis=0) if ys[0].ndim else np.stack(ys) for ys in per_output]


def _errors(ref: list[np.ndarray], got: list[np.ndarray], label: str) -> tuple[float, float, float, float]:
    if len(ref) != len(got):
        raise DataError(f"{label} has {len(got)} outputs, the reference has {len(ref)}; compare the same model")
    for i, (r, g) in enumerate(zip(ref, got)):
        if r.shape != g.shape:
            raise DataError(f"{label}: output {i} has shape {list(g.shape)}, the reference has {list(r.shape)}")
    r = np.concatenate([x.astype(np.float64).ravel() for x in ref])
    g = np.concatenate([x.astype(np.float64).ravel() for x in got])
    diff = np.abs(g - r)
    norm = float(np.linalg.norm(r) * np.linalg.norm(g))
    cosine = float(np.dot(r, g) / norm) if norm > 0 else (1.0 if not diff.any() else 0.0)
    return float(diff.max()), float((diff / (np.abs(r) + REL_EPS)).max()), float(diff.mean()), cosine


def _float_reference_inputs(infos: list[TensorInfo], n: int, seed: int) -> list[list[np.ndarray]]:
    from medge.runtimes.feeds import random_inputs

    floats = [TensorInfo(t.name, t.shape, "float32") if t.quantization is not None else t for t in infos]
    return [list(feed.values()) for feed in random_inputs(floats, seed=seed, count=n)]


def _metric_setup(config: CompareConfig, ref: ArtifactRef, refs: list[ArtifactRef], targets: np.ndarray | None) -> str | None:
    if targets is None:
        if config.metric:
            raise MedgeError("--metric needs --inputs with targets (labels/masks/signals); add --inputs SOURCE")
        return None
    from medge.quantize.metrics import check_metric_name, default_metric_for_task

    if config.metric:
        return check_metric_name(config.metric)
    meta = ref.meta or next((r.meta for r in refs if r.meta is not None), None)
    return default_metric_for_task(meta.task) if meta is not None else None


def compare_artifacts(config: CompareConfig) -> CompareReport:
    """Compare every artifact in `config.artifacts` against the first one (see module docstring)."""
    from medge.runtimes import open_runtime
    from medge.runtimes.feeds import load_source_inputs

    if len(config.artifacts) < 2:
        raise MedgeError("compare needs at least two artifacts: the reference first, then the ones to check")
    if config.n < 1:
        raise MedgeError(f"--n must be at least 1 (got {config.n})")
    refs = [resolve_artifact(*split_runtime_suffix(a)) for a in config.artifacts]
    reference = refs[0]

    def device_of(r: ArtifactRef) -> str:
        return config.runtime_device or r.device or "cpu"

    with open_runtime(reference.path, reference.runtime, device=device_of(reference), threads=config.threads, **config.options) as rt:
        infos = rt.inputs()
        targets, data_report = None, {}
        if config.inputs:
            data_ref = reference if reference.onnx or reference.meta else next((r for r in refs if r.onnx or r.meta), reference)
            samples, targets, data_report = load_source_inputs(config.inputs, data_ref, infos, n=config.n, seed=config.seed)
            source = config.inputs
        else:
            samples = _float_reference_inputs(infos, config.n, config.seed)
            source = f"random-normal(seed={config.seed})"
        ref_out = _run_all(rt, samples, reference.label, None)
    ref_shapes = [tuple(y.shape[1:]) for y in ref_out]
    ref_shapes = [(1, *s) for s in ref_shapes]
    metric_name = _metric_setup(config, reference, refs, targets)

    def score(outputs: list[np.ndarray]) -> float | None:
        if metric_name is None or targets is None:
            return None
        from medge.quantize.metrics import task_metric

        return float(task_metric(metric_name, outputs[0], targets))

    report = CompareReport(
        reference=reference.label,
        reference_runtime=reference.runtime,
        reference_metric=score(ref_out),
        metric_name=metric_name,
        n_inputs=len(samples),
        inputs_source=source,
        inputs_report=data_report,
        max_abs_error_limit=config.max_abs_error,
        min_cosine_limit=config.min_cosine,
    )
    for ref in refs[1:]:
        with open_runtime(ref.path, ref.runtime, device=device_of(ref), threads=config.threads, **config.options) as rt:
            got = _run_all(rt, samples, ref.label, ref_shapes)
        max_abs, max_rel, mean_abs, cosine = _errors(ref_out, got, ref.label)
        row = ArtifactComparison(ref.label, ref.runtime, device_of(ref), max_abs, max_rel, mean_abs, cosine)
        row.metric = score(got)
        if row.metric is not None and report.reference_metric is not None:
            row.metric_delta = row.metric - report.reference_metric
        if config.max_abs_error is not None and max_abs > config.max_abs_error:
            row.failures.append(f"max abs error {max_abs:.3g} > {config.max_abs_error:g}")
        if config.min_cosine is not None and cosine < config.min_cosine:
            row.failures.append(f"cosine {cosine:.6f} < {config.min_cosine:g}")
        row.passed = not row.failures
        report.artifacts.append(row)
    return report
