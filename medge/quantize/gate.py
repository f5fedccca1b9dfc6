"""Quantize with a clinical accuracy gate and FP32 fallback — written once for every backend.

1. Calibrate and quantize everything the backend can quantize.
2. With ``--eval``: score FP32 and quantized models with the task metric (ORT for ONNX, OpenVINO
   for IR, FP32 reference at f32 precision) and a paired-bootstrap 95 % CI of the drop.
   Without a metric gate but with ``parity_limits`` (every compile; quantize with a tolerance flag),
   each attempt is judged by its parity with FP32 on 8 calibration samples instead, on the target's
   numerics (``runtime_options``), and a parity failure climbs the same ladder.
3. If the drop exceeds ``max_drop`` (or the parity fails): first try the backend's whole-model schemes (NNCF's
   transformer mode for attention graphs), then rank quantization points by the error each adds (FP32 vs
   quantized intermediate activations).  Where the backend can, widen the worst 1, 2, 4 …
   activations to 16 bits (weights stay int8, so the file stays INT8-sized); if that is not enough,
   move the worst 1, 2, 4, 8 … node groups back to FP32 until the gate passes or the step budget /
   candidate list runs out (the climb: `medge.quantize.ladder`; these steps: `medge.quantize.ladder_onnx`).
4. Write the artifact atomically only when the gate passes; otherwise raise `GateFailedError`
   carrying the report of every attempt, and leave nothing at the output path.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from medge.common.errors import GateFailedError, MedgeError, UsageError
from medge.common.fileio import atomic_path
from medge.evaluate.metrics import check_metric_name, default_metric_for_task, task_metric
from medge.quantize.backends.base import QuantBackend, output_head_nodes
from medge.quantize.config import CALIB_METHODS, PRECISIONS, QuantizeConfig
from medge.quantize.ladder import Rung, climb
from medge.quantize.ladder_onnx import OnnxSteps, outputs
from medge.quantize.report import QuantizeReport
from medge.runtimes.model_file import ModelFile, load_onnx, open_onnx
from medge.calibration import check_overlap, load_data_for_onnx
from medge.common.metadata import PREFIX, assumed_note, read_metadata
from medge.quantize import BACKENDS

log = logging.getLogger(__name__)

_SUMMARY_KEYS = ("kind", "split", "found", "used", "skipped", "skipped_by_reason", "class_counts", "synthetic_task", "notes")
DYNAMIC_CONV_WARNING = (
    "int8-dynamic on a convolutional model runs 8-12x slower than static INT8 on CPU "
    "(ConvInteger); prefer --precision int8 with --calib"
)

INT16_WARNING = (
    "{n} activation tensor(s) are quantized to 16 bits to pass the gate (weights stay int8): the file keeps "
    "its INT8 size, but ONNX Runtime CPU runs those ops as FP32 kernels between Q/DQ nodes; "
    "--no-int16-fallback moves nodes to FP32 instead"
)


# --------------------------------------------------------------------------- validation / data
def _validate(config: QuantizeConfig, backend: QuantBackend) -> ModelFile:
    """Check the request before any work; returns the input model, opened by the one loader."""
    if config.precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{config.precision}'; choices: {', '.join(PRECISIONS)}")
    if config.precision not in backend.precisions:
        raise UsageError(f"backend '{backend.name}' does not do {config.precision}; it does "
                         f"{', '.join(backend.precisions)}")
    if config.calib_method not in CALIB_METHODS:
        raise UsageError(f"unknown --calib-method '{config.calib_method}'; choices: {', '.join(CALIB_METHODS)}")
    model = Path(config.model)
    if Path(config.output).suffix != backend.artifact_suffix:
        raise UsageError(f"backend '{backend.name}' writes {backend.artifact_suffix} files; "
                         f"give -o a name ending in {backend.artifact_suffix}")
    if Path(config.output).resolve() == model.resolve():
        raise UsageError("the output path is the input model; choose another -o")
    if config.precision == "int8" and not config.calib_source:
        raise UsageError("static INT8 needs calibration data: pass --calib SOURCE "
                         "(a folder, DICOM, WFDB, .npz or synthetic:<task>)")
    if config.max_drop is not None and not config.eval_source:
        raise UsageError("--max-drop needs --eval SOURCE to measure the drop")
    if config.metric:
        check_metric_name(config.metric)
    for name, value in (("--calib-size", config.calib_size), ("--eval-size", config.eval_size)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}")
    if config.max_fallback_steps < 0:
        raise UsageError("the fallback step budget cannot be negative")
    return open_onnx(model)


def _plain_report(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return dict(obj)


def _data_summary(source: str, data: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"source": source, "samples": len(data), "sha256": data.sha256}
    details = _plain_report(getattr(data, "report", None))
    for key in _SUMMARY_KEYS:
        if key in details:
            summary.setdefault(key, details[key])
    return summary


def _model_bytes(path: Path) -> int:
    """Size of an ONNX file plus its external data files."""
    model = load_onnx(path, check=False)
    files = {path}
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                files.add(path.parent / entry.value)
    return sum(f.stat().st_size for f in files if f.exists())


def _weight_bytes(path: Path) -> int | None:
    """Bytes of the initializers of an ONNX file (None for other artifacts)."""
    if path.suffix != ".onnx":
        return None
    import onnx

    model = load_onnx(path, external_data=True, check=False)
    return sum(len(i.raw_data) or onnx.numpy_helper.to_array(i).nbytes for i in model.graph.initializer)


def _metadata_props(model: Path, config: QuantizeConfig, report: QuantizeReport) -> dict[str, str]:
    info = {"precision": config.precision, "backend": config.backend,
            "calibration_sha256": (report.calibration or {}).get("sha256"),
            "calib_method": config.calib_method if config.precision == "int8" else None,
            "trt_compatible": config.trt_compatible,
            "fp32_fallback_nodes": report.fp32_fallback_nodes,
            "int16_activation_tensors": report.int16_activation_tensors,
            "output_head_fp32": report.output_head_fp32,
            "metric": report.metric}
    meta = read_metadata(model)
    if meta is None:
        return {PREFIX + "quantization": json.dumps(info, sort_keys=True, default=str)}
    meta.extra = {**meta.extra, "quantization": info}
    return meta.to_props()


def _publish(backend: QuantBackend, artifact: Path, output: Path) -> list[Path]:
    """Copy every file of the artifact to its place beside `output`, the main file last."""
    written = []
    files = backend.artifact_files(artifact)
    for src in sorted(files, key=lambda f: f == artifact):
        dst = output if src == artifact else output.with_suffix(src.suffix)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        written.append(dst)
    return written


def quantize_model(config: QuantizeConfig) -> QuantizeReport:
    """Quantize `config.model` and, with a gate, recover a failing drop through FP32 fallback.

    Raises `GateFailedError` (with `.report`) when the gate cannot pass; nothing is written then.
    """
    t0 = time.perf_counter()
    backend: QuantBackend = BACKENDS.get(config.backend)()
    opened = _validate(config, backend)
    model, output = Path(config.model), Path(config.output)
    report = QuantizeReport(model=str(model), precision=config.precision, backend=config.backend,
                            options={"calib_method": config.calib_method, "keep_io_fp32": config.keep_io_fp32,
                                     "trt_compatible": config.trt_compatible,
                                     "keep_output_head_fp32": config.keep_output_head_fp32,
                                     "max_fallback_steps": config.max_fallback_steps,
                                     "int16_fallback": config.int16_fallback,
                                     "parity_limits": config.parity_limits,
                                     "reduce_range": bool(config.options.get("reduce_range"))})

    meta = opened.meta
    if meta is not None and assumed_note(meta.preprocessing):
        report.notes.append(assumed_note(meta.preprocessing))
    with tempfile.TemporaryDirectory(prefix="medge-quantize-") as tmp:
        prepared = backend.prepare(model, Path(tmp))
        gate = OnnxSteps(config, backend, prepared, Path(tmp))
        _load_data(config, model, gate, report)
        if config.precision == "int8-dynamic" and _conv_heavy(prepared):
            report.warnings.append(DYNAMIC_CONV_WARNING)
        if config.keep_output_head_fp32 and config.precision.startswith("int8"):
            gate.always_fp32 = output_head_nodes(load_onnx(prepared, check=False))
            report.output_head_fp32 = list(gate.always_fp32)
        if config.max_drop is None and config.parity_limits is not None and config.precision == "int8":
            gate.judge_by_parity(model)
        report.numerics = config.numerics
        if gate.eval_data is not None:
            gate.reference = outputs(model, backend.runtime, gate.eval_data, dict(backend.reference_options))
            gate.reference_metric = task_metric(gate.metric_name, gate.reference, gate.targets)
        report.attempts = climb(gate, Rung(f"all {config.precision}"), progress=log.info)
        report.sensitivity = gate.sensitivity
        attempt = report.attempts[-1]
        artifact = gate.artifacts[attempt.index]
        report.fp32_fallback_nodes = attempt.fp32_nodes
        report.int16_activation_tensors = attempt.int16_tensors
        report.scheme = attempt.scheme
        if config.precision == "int8":
            report.float_compute_ops = backend.float_compute_ops(artifact)
        if attempt.int16_tensors and attempt.passed:
            report.warnings.append(INT16_WARNING.format(n=len(attempt.int16_tensors)))
        if gate.eval_data is not None:
            report.metric = {"name": gate.metric_name, "reference": gate.reference_metric,
                             "quantized": attempt.gate["metric"], "drop": attempt.gate["drop"],
                             "ci95": attempt.gate["ci95"],
                             "max_drop": config.max_drop, "passed": attempt.passed,
                             "n_eval": len(gate.eval_data)}
            if attempt.gate.get("precision_note"):  # same precision rule as the prune gate (medge.evaluate)
                report.notes.append(attempt.gate["precision_note"])
        parity = attempt.gate.get("parity")
        if parity is not None:
            report.parity = gate.last_parity
        if attempt.passed is not False:
            backend.finalize(artifact, _metadata_props(model, config, report))
        report.size_bytes = {"before": _model_bytes(model),
                             "after": sum(f.stat().st_size for f in backend.artifact_files(artifact))}
        report.weight_bytes = {"before": _weight_bytes(model), "after": _weight_bytes(artifact)}
        report.size_ratio = round(report.size_bytes["after"] / max(report.size_bytes["before"], 1), 4)
        report.seconds = round(time.perf_counter() - t0, 2)
        if attempt.passed is False and parity is not None:
            raise GateFailedError(
                f"{config.precision} parity vs FP32 failed ({'; '.join(parity['failed'])}) after "
                f"{len(report.attempts)} attempt(s) (up to {len(attempt.fp32_nodes)} node(s) in FP32, "
                f"{len(attempt.int16_tensors)} activation(s) at 16 bits); nothing written to {output} - pass --eval "
                "SOURCE --max-drop X to judge by the task metric, or loosen --min-cosine/--max-channel-error", report)
        if attempt.passed is False:
            raise GateFailedError(
                f"{config.precision} gate failed: {gate.metric_name} drop {attempt.gate['drop']:.4g} > max "
                f"{config.max_drop} after {len(report.attempts)} attempt(s) (up to {len(attempt.fp32_nodes)} "
                f"node(s) in FP32, {len(attempt.int16_tensors)} activation(s) at 16 bits); nothing written "
                f"to {output} - raise --max-drop, use more "
                "calibration data or try --calib-method entropy", report)
        _publish(backend, artifact, output)
        report.output = str(output)
    return report


def _load_data(config: QuantizeConfig, model: Path, gate: OnnxSteps, report: QuantizeReport) -> None:
    calib = None
    if config.calib_source:
        calib = load_data_for_onnx(config.calib_source, model, n=config.calib_size, split="calib")
        gate.calib_feeds = list(calib)
        report.calibration = _data_summary(config.calib_source, calib)
    if not config.eval_source:
        return
    data = load_data_for_onnx(config.eval_source, model, n=config.eval_size, split="eval")
    targets = data.targets()
    if targets is None:
        raise MedgeError(f"--eval {config.eval_source} has no targets (labels/masks); "
                         "give an evaluation source with ground truth")
    overlap = check_overlap(calib, data, allow=config.allow_overlap) if calib is not None else 0
    meta = read_metadata(model)
    if config.metric:
        gate.metric_name = config.metric
    elif meta is not None:
        gate.metric_name = default_metric_for_task(meta.task)
    else:
        raise UsageError(f"{model.name} has no medge metadata to pick a metric from; pass --metric")
    gate.eval_data, gate.targets = data, targets
    report.evaluation = {**_data_summary(config.eval_source, data), "overlap_with_calibration": overlap}


def _conv_heavy(model_path: Path) -> bool:
    ops = [n.op_type for n in load_onnx(model_path, check=False).graph.node]
    convs = sum(op in ("Conv", "ConvTranspose") for op in ops)
    return convs > 0 and convs >= sum(op in ("MatMul", "Gemm") for op in ops)
