"""`medge build`: export → quantize with gate → compile → compare → profile, in one report.

The bundle is written by `medge.devices.compile_model` (atomic, verified by its manifest).  The
build's own report (Markdown, JSON and a PNG latency/accuracy chart) and the FP32 source ONNX go to
a sibling folder ``<bundle>.report/`` so that the bundle's manifest stays the single truth about
what is deployed.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import MedgeError, UsageError
from medge.common.reports import Report
from medge.build.prune_step import compare_dense, prune_for_build
from medge.build.report import build_rows, write_build_report
from medge.common.console import warn
from medge.common.metadata import read_metadata
from medge.devices.compile import CompileConfig, CompileReport, check_bundle_output, compile_model
from medge.devices.profiling import ProfileConfig, profile_artifact
from medge.devices.remote import profile_remote
from medge.devices.target import get_target, validate_request
from medge.export import export_onnx, load_model
from medge.export.declare import Declaration, apply_declaration, check_declaration
from medge.export.loading import source_reference
from medge.zoo import MODELS, get_card

DEFAULT_MODEL = "cxr-densenet-tiny"
DEFAULT_TARGET = "intel-cpu"
DERIVED_SAMPLES = 300  # demo feeds made from another zoo model (the compile's default sample count)


@dataclass
class BuildConfig:
    """What `medge build` was asked to do."""

    model: str = DEFAULT_MODEL
    target: str = DEFAULT_TARGET
    output: Path = Path("build/bundle")
    precision: str | None = None
    calib: str | None = None
    eval: str | None = None
    max_drop: float | None = None
    weights: str | None = None
    model_kwargs: dict[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    device: str = "local"
    runs: int = 50
    warmup: int = 10
    threads: int | None = None
    compare_n: int = 32
    options: dict[str, Any] = field(default_factory=dict)
    force: bool = False  # replace a bundle for another target or one holding device files
    tolerances: dict[str, float | None] = field(default_factory=dict)  # INT8 parity tolerances (compile's)
    declaration: Any = None  # medge.export.declare.Declaration for non-zoo models
    # --prune auto|S: prune → distil → gate before export (medge/build/prune_step.py)
    prune: str | None = None
    prune_data: str | None = None
    round_to: int | None = None
    prune_options: dict[str, Any] = field(default_factory=dict)  # extra PruneConfig fields


@dataclass
class BuildReport(Report):
    """One report for the whole chain."""

    title: ClassVar[str] = "medge build"
    model: str = ""
    target: str = ""
    bundle: str = ""
    precision: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)  # step, seconds, status
    export: dict[str, Any] = field(default_factory=dict)
    compile: dict[str, Any] = field(default_factory=dict)
    compare: dict[str, Any] = field(default_factory=dict)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    report_files: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pruning: dict[str, Any] = field(default_factory=dict)  # --prune: dense vs pruned vs pruned+INT8
    seconds: float = 0.0
    error: str = ""  # why the chain stopped, also between steps (e.g. no calibration data after export)

    @property
    def ok(self) -> bool:
        return not self.error and all(s["status"] in ("ok", "skipped") for s in self.steps)

    def table_rows(self) -> list[tuple[str, str]]:
        return build_rows(self)


class _Steps:
    """Times each step and records its status in the report."""

    def __init__(self, report: BuildReport) -> None:
        self.report = report

    def run(self, name: str, fn, *, note: str = ""):
        print(f"medge: build: {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        entry = {"step": name, "status": "ok", "seconds": 0.0, "note": note}
        self.report.steps.append(entry)
        try:
            result = fn()
            if getattr(result, "ok", True) is False:
                entry["status"], entry["note"] = "failed", "see its report below"
            return result
        except MedgeError as exc:
            entry["status"], entry["note"] = "failed", str(exc)
            raise
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 3)

    def skip(self, name: str, why: str) -> None:
        self.report.steps.append({"step": name, "status": "skipped", "seconds": 0.0, "note": why})


def _default_data(meta, given: str | None, use: str, warnings: list[str], folder: Path) -> str | None:
    """The user's source, else (zoo models only) the synthetic generator that fits it, or feeds made
    from the zoo model it takes its inputs from (written to `folder`), with a WARNING."""
    if given:
        return given
    from medge.calibration.synthetic_source import infer_task

    if meta.model not in MODELS:
        return None  # synthetic data is wrong data for a user's model
    try:
        source = described = f"synthetic:{infer_task(meta)}"
        if use == "eval" and not _synthetic_targets_fit(meta, source):
            text = (f"no --eval given, and the targets of {source} do not fit {meta.model}'s output: "
                    "its INT8 is gated on parity with FP32; pass --eval with targets for its output to gate a metric")
            warn(text)
            warnings.append(text)
            return None
    except MedgeError:
        source = _derived_feeds(meta.model, use, folder)
        if source is None:
            return None
        described = f"{source} (made from {meta.preprocessing.get('source')} on its synthetic data)"
    text = f"no --{use} given: {'calibrating' if use == 'calib' else 'evaluating'} {meta.model} on {described} " \
           f"(demo data); pass --{use} with real data for deployment"
    warn(text)
    warnings.append(text)
    return source


def _synthetic_targets_fit(meta, source: str) -> bool:
    """Whether a synthetic sample's target has the zoo model's output shape (an image encoder's
    embedding is not a lesion mask, even when it holds as many values)."""
    from medge.calibration import load_data

    card = get_card(meta.model)
    sample = load_data(source, meta, input_name=card.input_name, input_shape=tuple(card.input_shape),
                       n=1, split="eval").samples[0]
    import numpy as np

    from medge.evaluate.metrics import targets_fit

    return sample.target is not None and targets_fit(tuple(card.output_shape[1:]), np.shape(sample.target))


def _derived_feeds(model: str, use: str, folder: Path) -> str | None:
    """An .npz of demo feeds for a zoo model that takes another zoo model's tensors, else None.

    Evaluation needs targets: a model whose feeds have none is gated on parity only."""
    from medge.build.derived_feeds import derived_feeds_have_targets, has_derived_feeds, write_derived_feeds

    if not has_derived_feeds(model) or (use == "eval" and not derived_feeds_have_targets(model)):
        return None
    path = write_derived_feeds(model, folder / f"{use}-feeds.npz", n=DERIVED_SAMPLES,
                               split="calib" if use == "calib" else "eval")
    return str(path)


def _runnable_here(runtime: str, device: str) -> str | None:
    """None when `runtime` can run on this machine's CPU, else the reason it cannot."""
    from medge.runtimes import RUNTIMES

    if device.lower() not in ("cpu", ""):
        return f"the artifact targets the device's {device}, which this machine does not have"
    try:
        RUNTIMES.get(runtime)
    except MedgeError as exc:
        return str(exc)
    return None


def _check_model_file(model: str) -> None:
    """Open a model file through the one loader before anything is written: a corrupt .pt2 or .onnx
    is a one-line error with no report folder left behind; an .onnx is already exported."""
    from medge.runtimes.model_file import FORMATS, open_model

    path = Path(model)
    if path.suffix.lower() not in FORMATS:
        return  # zoo names, module:factory and TorchScript files are resolved by the export step
    opened = open_model(path)
    if opened.format != "exported-program":
        raise UsageError(f"{path} is already exported ({opened.format}); 'medge build' starts from PyTorch (a zoo name, "
                         f"package.module:factory or .pt2/.pt): run 'medge compile {path} --target T -o BUNDLE'")


def _pruned_precision(config: BuildConfig, target) -> str | None:
    """--prune without --precision: INT8 where the target accelerates it (the pruned+INT8 bundle that pruning is
    for: the two speed-ups compound), else the target's default."""
    return "int8" if config.prune is not None and target.int8_accelerated and "int8" in target.precisions else None


def build(config: BuildConfig) -> BuildReport:
    """Run the whole chain for `config.model` on `config.target`; returns the BuildReport."""
    t0 = time.perf_counter()
    target = get_target(config.target)
    precision = validate_request(target, config.precision or _pruned_precision(config, target))  # fail before any work
    if config.runs < 2:
        raise UsageError(f"--runs must be at least 2 (got {config.runs})")
    output = Path(config.output)

    check_bundle_output(output, target.name, config.force)
    _check_model_file(config.model)
    report_dir = output.with_name(output.name + ".report")
    report_dir.mkdir(parents=True, exist_ok=True)
    report = BuildReport(model=config.model, target=target.name, bundle=str(output), precision=precision)
    try:
        _run_chain(config, target, precision, output, report_dir, report)
    except MedgeError as exc:
        # Keep what was learnt: the report says which step failed and why; no bundle is left behind.

        if isinstance(getattr(exc, "report", None), CompileReport):  # a refused bundle: its gate and preflight
            report.compile = exc.report.to_dict()
        report.error = str(exc)
        report.summary = _summary(report)
        report.seconds = round(time.perf_counter() - t0, 3)
        report.report_files = write_build_report(report, report_dir, error=str(exc))
        exc.report = report
        raise
    report.summary = _summary(report)
    report.seconds = round(time.perf_counter() - t0, 3)
    report.report_files = write_build_report(report, report_dir)
    return report


def _run_chain(config: BuildConfig, target, precision: str, output: Path, report_dir: Path, report: BuildReport) -> None:
    from medge.evaluate.metrics import default_metric_for_task
    from medge.compare import CompareConfig, compare_artifacts

    steps = _Steps(report)
    onnx_path = report_dir / "model.fp32.onnx"
    pruned = _prune_step(config, target, precision, report_dir, steps, report)
    source = (str(pruned.pt2), None, None, None) if pruned else (
        config.model, config.weights, config.model_kwargs, config.input_shape)

    def export():
        declaration = config.declaration or Declaration()
        shape = source[3]
        check_declaration(source[0], declaration, shape[0].shape if isinstance(shape, list) else shape)
        loaded = load_model(source[0], weights=source[1], model_kwargs=source[2], input_shape=shape)
        notes = apply_declaration(loaded, declaration)
        result = export_onnx(source[0], onnx_path, loaded=loaded)
        result.notes.extend(notes)
        return result

    exported = steps.run("export", export)
    report.export = exported.to_dict()
    meta = read_metadata(onnx_path)
    calib = _default_data(meta, config.calib, "calib", report.warnings, report_dir) if precision == "int8" \
        else config.calib
    if precision == "int8" and calib is None:
        why = "no synthetic data fits its inputs" if meta.model in MODELS else "which is not a zoo model"
        raise UsageError(f"int8 needs calibration data for '{meta.model}', {why}: "
                         "pass --calib FOLDER|FILE|synthetic:<task>")
    evaluation = _default_data(meta, config.eval, "eval", report.warnings, report_dir)
    report.precision = precision
    metric = default_metric_for_task(meta.task) if evaluation else None
    max_drop = config.max_drop
    if max_drop is None and evaluation and metric and precision == "int8":
        from medge.evaluate.gate import DEFAULT_MAX_DROP  # the one budget table

        max_drop = DEFAULT_MAX_DROP.get(metric)
    if pruned is not None:  # --max-drop is the budget vs dense FP32: INT8 gets what pruning left
        max_drop = pruned.int8_budget if evaluation and precision == "int8" else None

    command = shlex.join(["medge", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("medge") else None
    compiled = steps.run("quantize+compile", lambda: compile_model(CompileConfig(
        model=onnx_path, target=target.name, output=output, precision=precision, calib_source=calib,
        eval_source=evaluation if max_drop is not None else None, max_drop=max_drop, options=config.options,
        model_ref=None if pruned else source_reference(config.model, config.model_kwargs, config.weights),
        command=command, force=config.force, tolerances=config.tolerances,
    )))
    report.compile = compiled.to_dict()

    artifact_runtime = compiled.runtime or ""
    reason = _runnable_here(artifact_runtime, compiled.runtime_device or "cpu")
    if reason is None:
        compared = steps.run("compare", lambda: compare_artifacts(CompareConfig(
            artifacts=[str(onnx_path), str(output)], inputs=evaluation, n=config.compare_n, metric=metric,
            threads=config.threads,
        )))
        report.compare = compared.to_dict()
    else:
        steps.skip("compare", reason)

    def profile(path: str, runtime: str | None = None):
        return profile_artifact(ProfileConfig(
            artifact=path, runtime=runtime, threads=config.threads, warmup=config.warmup, runs=config.runs,
            inputs=calib,
        ))

    report.profiles.append(steps.run("profile fp32 onnx", lambda: profile(str(onnx_path), "onnxruntime")).to_dict())
    if config.device != "local":
        remote = steps.run(f"profile on {config.device}", lambda: profile_remote(ProfileConfig(
            artifact=str(output), threads=config.threads, warmup=config.warmup, runs=config.runs), config.device))
        report.profiles.append(remote.to_dict())
    elif reason is None:
        report.profiles.append(steps.run("profile bundle", lambda: profile(str(output))).to_dict())
    else:
        steps.skip("profile bundle", f"{reason}; profile it there with 'medge profile {output} --device ssh://USER@HOST'")
    if pruned is not None:
        report.pruning = steps.run("profile dense vs pruned", lambda: compare_dense(
            config, target, pruned, report_dir / "model.dense.fp32.onnx", onnx_path, report))


def _prune_step(config: BuildConfig, target, precision: str, report_dir: Path, steps: _Steps, report: BuildReport):
    """--prune: prune → distil → gate (medge/build/prune_step.py); None without --prune."""
    if config.prune is None:
        return None

    pruned = steps.run("prune+distil", lambda: prune_for_build(config, target, precision, report_dir))
    report.pruning = {"sparsity": pruned.report.get("sparsity"), "gate": pruned.report.get("gate"),
                      "round_to": pruned.round_to, "int8_max_drop": pruned.int8_budget}
    return pruned


def _summary(report: BuildReport) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    gate = report.compile.get("gate") or {}
    metric = gate.get("metric") if isinstance(gate.get("metric"), dict) else gate
    if metric and metric.get("name"):
        summary[f"{metric['name']} fp32"] = metric.get("reference")
        summary[f"{metric['name']} {report.precision}"] = metric.get("quantized")
        summary["metric drop"] = metric.get("drop")
        summary["gate passed"] = metric.get("passed")
    parity = gate.get("parity") or {}
    if parity.get("min_cosine") is not None:  # the quantized artifact vs FP32 on calibration samples
        summary["gate min cosine vs fp32"] = parity["min_cosine"]
        summary.setdefault("gate passed", gate.get("passed"))
    if parity.get("min_pearson") is not None:  # per output channel, across the calibration samples
        summary["gate min pearson vs fp32"] = parity["min_pearson"]
    for cmp in report.compare.get("artifacts", []):
        summary["max abs error vs fp32"] = cmp.get("max_abs_error")
        summary["cosine vs fp32"] = cmp.get("cosine")
    sizes = [p.get("size_bytes") for p in report.profiles]
    lat = [p.get("latency_ms", {}).get("p50") for p in report.profiles]
    if len(lat) >= 2 and lat[0] and lat[1]:
        summary["p50 fp32 onnx (ms)"] = lat[0]
        summary["p50 bundle (ms)"] = lat[1]
        summary["speed-up vs fp32 onnx"] = round(lat[0] / lat[1], 2)
    if len(sizes) >= 2 and sizes[0] and sizes[1]:
        summary["size ratio vs fp32"] = round(sizes[1] / sizes[0], 3)
    summary.update(_pruning_summary(report.pruning))
    return summary


def _pruning_summary(pruning: dict[str, Any]) -> dict[str, Any]:
    """--prune: one line per model (dense, pruned, pruned+INT8): metric, MACs, size, latency."""
    out: dict[str, Any] = {}
    if pruning.get("sparsity") is not None:
        out["pruned sparsity"] = pruning["sparsity"]
    gate = pruning.get("gate") or {}
    if gate.get("ci95"):
        out["pruning gate"] = (f"{gate['name']} drop {gate['drop']:.4g} [95% CI {gate['ci95'][0]:.4g}, "
                               f"{gate['ci95'][1]:.4g}] on {gate['n_eval']} samples, budget {gate['max_drop']}: "
                               f"{gate.get('verdict', gate.get('passed'))}")
    if pruning.get("settings"):
        out["pruning settings"] = ", ".join(f"{k} {v}" for k, v in pruning["settings"].items())
    for name, row in (pruning.get("rows") or {}).items():
        cells = [f"{pruning.get('metric')} {row['metric']:.4f}" if row.get("metric") is not None else "metric -",
                 f"{row['macs'] / 1e6:.1f} MMACs" if row.get("macs") else "MACs -",
                 f"{row['size_bytes'] / 1e6:.2f} MB" if row.get("size_bytes") else "size -",
                 f"p50 {row['latency_ms']:.3f} ms ({row.get('runtime')})" if row.get("latency_ms") else "latency -"]
        out[name] = " | ".join(cells)
    if pruning.get("notes"):
        out["pruning notes"] = "; ".join(pruning["notes"])
    return out
