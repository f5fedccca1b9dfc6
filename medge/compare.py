"""Run the same inputs through several artifacts/runtimes and measure how far each is from the first.

Inputs are float data in the reference's layout (calibration/eval data with ``inputs``, else seeded
random normals).  Each artifact gets them by input position, transposed when its input is the
NCHW↔NHWC counterpart and quantized with its own (scale, zero_point) for int8 I/O; its outputs
are dequantized and transposed back before comparison.  Errors are over all outputs and inputs:
``max_abs_error``; ``max_rel_error`` = max |a − r| / (|r| + 1e-6); cosine similarity of the
flattened outputs (all from `medge.evaluate.parity`); and, with targets, the task metric
(medge.evaluate.metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from medge.common.errors import MedgeError
from medge.evaluate.parity import compare_output_lists
from medge.common.reports import Report
from medge.runtimes.artifacts import ArtifactRef, resolve_artifact
from medge.runtimes.base import TensorInfo
from medge.calibration.artifact_inputs import load_source_inputs
from medge.common.bundle import REFERENCE_INPUTS, REFERENCE_OUTPUTS
from medge.evaluate.metrics import check_metric_name, default_metric_for_task, task_metric
from medge.runtimes import RUNTIMES, open_runtime
from medge.runtimes.feeds import adapt_inputs, random_inputs, restore_outputs
from medge.runtimes.model_file import load_onnx


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
    reference_data: bool = False  # --reference: the bundle's stored inputs/outputs are the reference


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
    precision: str = "fp32"
    limits: dict[str, Any] = field(default_factory=dict)  # max_abs_error, min_cosine and where they came from


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
            rows.append((f"limits {a.path}", limits_text(a.limits)))
            text = f"max abs {a.max_abs_error:.3g}, max rel {a.max_rel_error:.3g}, cosine {a.cosine:.6f}"
            if a.metric is not None:
                text += f", {self.metric_name} {a.metric:.6g} (Δ {a.metric_delta:+.3g})"
            text += " — PASS" if a.passed else f" — FAIL ({'; '.join(a.failures)})"
            rows.append((f"{a.path} [{a.runtime}]", text))
        return rows


# Default pass limits per precision of the compared artifact: the max abs error as a fraction of
# the reference outputs' range (so probabilities and µV signals get comparable limits) and the
# minimum cosine similarity.  --max-abs-error / --min-cosine replace them.
DEFAULT_LIMITS = {"fp32": (1e-3, 0.9999), "fp16": (2e-2, 0.999), "int8": (None, 0.95)}


def limits_text(limits: dict[str, Any]) -> str:
    """``cosine ≥ 0.95, max abs ≤ 0.001 (int8 defaults)`` for a row's limits."""
    parts = [f"cosine ≥ {limits['min_cosine']:g}"] if limits.get("min_cosine") is not None else []
    if limits.get("max_abs_error") is not None:
        parts.append(f"max abs ≤ {limits['max_abs_error']:.3g}")
    return f"{', '.join(parts) or 'none'} ({limits.get('from', '')})"


def artifact_precision(ref: ArtifactRef) -> str:
    """fp32 / fp16 / int8 of an artifact: the bundle's manifest, else what the file holds."""
    if ref.precision:
        return ref.precision
    path = ref.path
    if path.suffix == ".onnx":
        import onnx

        model = load_onnx(path, check=False)  # resolve_artifact checked it
        ops = {n.op_type for n in model.graph.node}
        if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
            return "int8"
        if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
            return "fp16"
        return "fp32"
    if path.suffix == ".xml":
        text = path.read_text(errors="replace")
        if "FakeQuantize" in text or 'element_type="i8"' in text or 'element_type="u8"' in text:
            return "int8"
        return "fp16" if 'element_type="f16"' in text else "fp32"
    return "int8"  # .tflite/.engine without a manifest: the loosest limits, said in the row


def _limits(config: CompareConfig, precision: str, ref_out: list[np.ndarray]) -> dict[str, Any]:
    frac, cosine = DEFAULT_LIMITS.get(precision, DEFAULT_LIMITS["int8"])
    span = max((float(y.max() - y.min()) for y in ref_out if y.size), default=0.0) or 1.0
    limits: dict[str, Any] = {"max_abs_error": None if frac is None else frac * span, "min_cosine": cosine,
                              "from": f"{precision} defaults"}
    given = []
    if config.max_abs_error is not None:
        limits["max_abs_error"] = config.max_abs_error
        given.append("--max-abs-error")
    if config.min_cosine is not None:
        limits["min_cosine"] = config.min_cosine
        given.append("--min-cosine")
    if given:
        limits["from"] = " ".join(given) + ("" if len(given) == 2 else f", else {precision} defaults")
    return limits


def _check_row(row: ArtifactComparison) -> None:
    limit, cosine = row.limits.get("max_abs_error"), row.limits.get("min_cosine")
    if limit is not None and row.max_abs_error > limit:
        row.failures.append(f"max abs error {row.max_abs_error:.3g} > {limit:.3g}")
    if cosine is not None and row.cosine < cosine:
        row.failures.append(f"cosine {row.cosine:.6f} < {cosine:g}")
    row.passed = not row.failures


def split_runtime_suffix(spec: str) -> tuple[str, str | None]:
    """``"model.onnx@openvino"`` → (``"model.onnx"``, ``"openvino"``); no known runtime after '@' → (spec, None)."""
    path, sep, runtime = spec.rpartition("@")
    return (path, runtime) if sep and runtime in RUNTIMES else (spec, None)


def _run_all(rt: Any, samples: list[list[np.ndarray]], label: str, ref_shapes: list[tuple[int, ...]] | None) -> list[np.ndarray]:
    """Outputs of every sample, concatenated along the batch axis, one array per output."""
    infos = rt.outputs()
    per_output: list[list[np.ndarray]] = [[] for _ in infos]
    for sample in samples:
        outs = restore_outputs(rt.infer(adapt_inputs(sample, rt.inputs(), who=label)), infos, ref_shapes)
        for i, y in enumerate(outs):
            per_output[i].append(y)
    return [np.concatenate(ys, axis=0) if ys[0].ndim else np.stack(ys) for ys in per_output]


def _errors(ref: list[np.ndarray], got: list[np.ndarray], label: str) -> tuple[float, float, float, float]:
    d = compare_output_lists(ref, got, label)
    return d.max_abs, d.max_rel, d.mean_abs, d.cosine


def _float_reference_inputs(infos: list[TensorInfo], n: int, seed: int) -> list[list[np.ndarray]]:
    floats = [TensorInfo(t.name, t.shape, "float32") if t.quantization is not None else t for t in infos]
    return [list(feed.values()) for feed in random_inputs(floats, seed=seed, count=n)]


def _metric_setup(config: CompareConfig, ref: ArtifactRef, refs: list[ArtifactRef], targets: np.ndarray | None) -> str | None:
    if targets is None:
        if config.metric:
            raise MedgeError("--metric needs --inputs with targets (labels/masks/signals); add --inputs SOURCE")
        return None

    if config.metric:
        return check_metric_name(config.metric)
    meta = ref.meta or next((r.meta for r in refs if r.meta is not None), None)
    return default_metric_for_task(meta.task) if meta is not None else None


def compare_artifacts(config: CompareConfig) -> CompareReport:
    """Compare every artifact in `config.artifacts` against the first one (see module docstring)."""
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
        row.precision = artifact_precision(ref)
        row.limits = _limits(config, row.precision, ref_out)
        _check_row(row)
        report.artifacts.append(row)
    return report


def compare_to_reference_data(config: CompareConfig) -> CompareReport:
    """``medge compare BUNDLE --reference``: the bundle's artifact against the inputs/outputs stored at compile."""
    if len(config.artifacts) != 1:
        raise MedgeError("--reference compares one bundle with its stored reference outputs; pass exactly one BUNDLE")
    ref = resolve_artifact(*split_runtime_suffix(config.artifacts[0]))
    if ref.bundle is None:
        raise MedgeError(f"--reference needs a bundle folder (with {REFERENCE_INPUTS}), not the file {ref.path}")
    inputs_path, outputs_path = ref.bundle / REFERENCE_INPUTS, ref.bundle / REFERENCE_OUTPUTS
    if not inputs_path.is_file() or not outputs_path.is_file():
        raise MedgeError(f"bundle {ref.bundle.name} has no {REFERENCE_INPUTS}/{REFERENCE_OUTPUTS}; recompile it with "
                         "this medge, or compare it against its ONNX: medge compare MODEL.onnx BUNDLE")
    with np.load(inputs_path) as stored_in, np.load(outputs_path) as stored_out:
        inputs = [stored_in[k] for k in stored_in.files]
        ref_out = [stored_out[k].astype(np.float32) for k in stored_out.files]
    n = inputs[0].shape[0]
    samples = [[x[i:i + 1] for x in inputs] for i in range(n)]
    device = config.runtime_device or ref.device or "cpu"
    with open_runtime(ref.path, ref.runtime, device=device, threads=config.threads, **config.options) as rt:
        got = _run_all(rt, samples, ref.label, [(1, *y.shape[1:]) for y in ref_out])
    max_abs, max_rel, mean_abs, cosine = _errors(ref_out, got, ref.label)
    row = ArtifactComparison(f"{ref.label} ({ref.path.relative_to(ref.bundle)})", ref.runtime, device,
                             max_abs, max_rel, mean_abs, cosine)
    row.precision = artifact_precision(ref)
    row.limits = _limits(config, row.precision, ref_out)
    _check_row(row)
    return CompareReport(reference=str(outputs_path), reference_runtime="stored fp32 outputs", artifacts=[row],
                         n_inputs=n, inputs_source=str(inputs_path), max_abs_error_limit=config.max_abs_error,
                         min_cosine_limit=config.min_cosine)
