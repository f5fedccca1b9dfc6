"""`compile_model`: validate a compile request, run the target's recipe, write the bundle.

The bundle is filled in a temporary folder beside the output and renamed into place only when the
recipe and the manifest succeeded, so a failing compile never leaves a bundle at ``-o``.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.common.console import Steps, warn
from medge.devices.target import DeviceProfile, get_target, validate_request
from medge.common.errors import DataError, GateFailedError, TargetError, UsageError, did_you_mean
from medge.common.reports import Report
from medge.common.bundle import DEVICE_OUTPUT_DIR, MANIFEST, write_manifest
from medge.common.fileio import atomic_dir, sha256_file
from medge.common.metadata import assumed_note
from medge.devices.compile_summary import compile_rows
from medge.devices.recipes import CompileContext, RECIPES
from medge.devices.recipes.base import PreflightFailedError
from medge.export.loading import source_reference
from medge.zoo import MODELS, get_card

# Options every recipe understands, on top of the keys of the target's compile_options
# (max_fallback_steps: the rungs of each INT8 fallback stage; LiteRT's int16_steps/float_steps default to it).
COMMON_OPTIONS = ("allow_unsupported", "eval_samples", "max_fallback_steps")


@dataclass
class CompileConfig:
    """What `medge compile` was asked to do."""

    model: Path  # FP32 ONNX with medge metadata
    target: str
    output: Path  # bundle folder
    precision: str | None = None  # None: the target's default precision
    calib_source: str | None = None
    eval_source: str | None = None
    max_drop: float | None = None
    options: dict[str, Any] = field(default_factory=dict)  # overrides of the target's compile_options
    model_ref: str | None = None  # zoo name or module:factory of the PyTorch source, when known
    model_kwargs: dict[str, Any] | None = None  # factory kwargs of model_ref
    weights: str | None = None  # weights file of model_ref
    build_engine: bool = False  # build the device artifact here (needs the toolkit, e.g. tensorrt)
    command: str | None = None  # the command line recorded in the manifest
    force: bool = False  # replace an existing bundle for another target or one holding device/ files
    progress: bool = False  # print step lines on stderr (the CLI sets it)
    #: INT8 parity tolerances (min_cosine, max_channel_error, atol, rtol; None: the default)
    tolerances: dict[str, float | None] = field(default_factory=dict)


@dataclass
class CompileReport(Report):
    """JSON report of `medge compile`."""

    title: ClassVar[str] = "medge compile"
    bundle: str = ""
    written: bool = False
    target: str = ""
    target_display_name: str = ""
    recipe: str = ""
    precision: str = ""
    primary_artifact: str | None = None
    runtime: str | None = None
    runtime_device: str | None = None
    files: dict[str, int] = field(default_factory=dict)  # relpath -> size in bytes
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    preflight: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    manifest_sha256: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        gate_ok = self.gate is None or self.gate.get("passed") is not False
        return self.written and gate_ok and self.preflight.get("ok", True) is not False

    def table_rows(self) -> list[tuple[str, str]]:
        return compile_rows(self)


def _check_options(target: DeviceProfile, overrides: dict[str, Any], choices: dict[str, tuple[str, ...]]) -> None:
    known = set(target.compile_options) | set(COMMON_OPTIONS) | set(choices)  # a recipe's own closed-set options too
    for key, value in overrides.items():
        if key not in known:
            raise UsageError(
                f"unknown compile option '{key}' for target '{target.name}';{did_you_mean(key, known)} "
                f"options: {', '.join(sorted(known))}"
            )
        if key in choices and value is not None and str(value) not in choices[key]:
            raise UsageError(f"unknown {key} '{value}' for target '{target.name}'; choices: {', '.join(choices[key])}")


def _default_calibration(meta, precision: str, calib: str | None, notes: list[str], warnings: list[str]) -> str | None:
    """INT8 needs data: the user's, else the zoo model's synthetic generator (a WARNING on stderr)."""
    if precision != "int8" or calib is not None:
        return calib
    task = None
    try:
        if meta.model in MODELS:
            task = get_card(meta.model).synthetic_task
    except ImportError:  # zoo needs torch; without it there is no synthetic default
        task = None
    if not task:
        raise UsageError(
            f"int8 needs calibration data for '{meta.model}': pass --calib FOLDER|FILE|synthetic:<task>"
        )
    text = (f"no --calib given: calibrating {meta.model} on synthetic:{task} (demo data); "
            "pass --calib with real data for deployment")
    warn(text)
    warnings.append(text)
    notes.append(f"calibrated on synthetic:{task} (demo data; pass --calib with real images for deployment)")
    return f"synthetic:{task}"


def _gate_summary(gate: dict[str, Any]) -> str:
    parity = gate.get("parity") or {}
    if gate.get("drop") is not None:
        return f"{gate.get('name', 'metric')} drop {gate['drop']:.4g} > {gate.get('max_drop')}"
    if parity.get("failed"):
        return f"parity vs FP32 on {parity.get('samples')} calibration samples: {'; '.join(parity['failed'])}"
    if parity.get("min_cosine") is not None:
        return f"parity vs FP32: min cosine {parity['min_cosine']:.3f} < {parity.get('min_cosine_required')}"
    return "see the gate in the report"


def _source_model(path: Path, meta) -> dict[str, Any]:
    return {"name": path.name, "sha256": sha256_file(path), "metadata": asdict(meta)}


def _model_source(config: CompileConfig, meta, notes: list[str]) -> str | None:
    """The PyTorch source for recipes that convert from PyTorch: --model-ref (with its kwargs and
    weights), else the source recorded in the ONNX metadata at export when it is still there."""
    if config.model_ref:
        if config.weights and not Path(config.weights).is_file():
            raise UsageError(f"--weights {config.weights} not found; give the checkpoint of --model-ref")
        return source_reference(config.model_ref, config.model_kwargs, config.weights)
    if config.model_kwargs or config.weights:
        raise UsageError("--model-kwargs/--weights describe --model-ref; add --model-ref package.module:factory")
    record = (meta.extra or {}).get("source")
    if not isinstance(record, dict) or not record.get("ref"):
        return None
    ref, kind, weights = str(record["ref"]), record.get("kind"), record.get("weights")
    checked = weights if weights else (ref if kind in ("exported-program", "torchscript") else None)
    if checked is not None:
        if not Path(checked).is_file():
            notes.append(f"the PyTorch source recorded at export ({checked}) is gone; recipes that need it convert the ONNX graph")
            return None
        if record.get("sha256") and sha256_file(checked) != record["sha256"]:
            notes.append(f"the PyTorch source recorded at export ({checked}) has changed since; it is not used")
            return None
    notes.append(f"PyTorch source from the ONNX metadata: {ref}" + (f" with kwargs {record.get('kwargs')}" if record.get("kwargs") else ""))
    return source_reference(ref, record.get("kwargs") or None, weights)


def check_bundle_output(output: Path, target: str, force: bool) -> None:
    """Refuse an -o that is not a bundle, and (without --force) a bundle for another target or with device files."""
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / MANIFEST).exists())):
        raise UsageError(f"output '{output}' exists and is not a medge bundle; choose a new -o path or remove it")
    if force or not (output / MANIFEST).is_file():
        return
    try:
        existing = (json.loads((output / MANIFEST).read_text()).get("target") or {}).get("name")
    except (OSError, ValueError, AttributeError):
        existing = None
    device_dir = output / DEVICE_OUTPUT_DIR
    device_files = sorted(p.relative_to(output).as_posix() for p in device_dir.rglob("*") if p.is_file()) \
        if device_dir.is_dir() else []
    if existing is not None and existing != target:
        raise UsageError(f"'{output}' holds a bundle for {existing}, not {target}; choose a new -o path, "
                         "or pass --force to replace it")
    if device_files:
        raise UsageError(f"'{output}' holds files built on the device ({', '.join(device_files[:3])}"
                         f"{' …' if len(device_files) > 3 else ''}); they would be lost: choose a new -o path, "
                         "or pass --force to replace the bundle")


def compile_model(config: CompileConfig) -> CompileReport:
    """Compile an FP32 ONNX model for `config.target` into a verified bundle at `config.output`."""
    from medge.runtimes.model_file import open_onnx

    t0 = time.perf_counter()
    steps = Steps(3, enabled=config.progress)
    steps("check the model, target and output")
    target = get_target(config.target)
    precision = validate_request(target, config.precision)
    output = Path(config.output)
    check_bundle_output(output, target.name, config.force)
    recipe = RECIPES.get(target.recipe)()
    _check_options(target, config.options, recipe.option_choices)
    model = Path(config.model)
    meta = open_onnx(model).meta
    if meta is None:
        raise DataError(f"{model} carries no medge metadata; export it with 'medge export' first")
    if config.max_drop is not None and not config.eval_source:
        raise UsageError("--max-drop needs --eval SOURCE to measure the drop on")
    notes: list[str] = []
    warnings: list[str] = []
    from medge.quantize.parity_gate import int8_limits

    parity_limits, tolerance_warnings = int8_limits(config.tolerances)
    if precision == "int8":
        warnings.extend(tolerance_warnings)
    model_ref = _model_source(config, meta, notes)  # usage errors first
    calib = _default_calibration(meta, precision, config.calib_source, notes, warnings)

    if assumed_note(meta.preprocessing):
        notes.append(assumed_note(meta.preprocessing))
    if config.build_engine and not recipe.builds_device_artifact:
        raise UsageError(f"--build-engine applies to TensorRT targets only; '{target.name}' uses the {recipe.name} recipe")
    report = CompileReport(
        bundle=str(output), target=target.name, target_display_name=target.display_name, recipe=recipe.name,
        precision=precision, notes=notes, warnings=warnings,
    )
    command = config.command or shlex.join(["medge", *sys.argv[1:]])
    try:
        with atomic_dir(output) as out_dir, tempfile.TemporaryDirectory(prefix="medge-compile-") as work:
            ctx = CompileContext(
                onnx_path=model, meta=meta, target=target, precision=precision, calib_source=calib,
                eval_source=config.eval_source, max_drop=config.max_drop, out_dir=out_dir, work_dir=Path(work),
                model_ref=model_ref, options=target.options(config.options), build_engine=config.build_engine,
                parity_limits=parity_limits,
            )
            work_text = {"int8": f"calibrate on {calib}, quantize to int8 and check the gate", "fp16": "convert to fp16",
                         "fp32": "convert"}.get(precision, "convert")
            steps(f"{recipe.name} recipe for {target.name}: {work_text}")
            result = recipe.compile(ctx)
            steps(f"write the bundle, reference inputs/outputs and the manifest to {output}")
            from medge.devices.reference_io import write_reference

            reference = write_reference(out_dir, model, calib)
            notes.extend(result.notes)
            if result.gate and result.gate.get("passed") is False:  # nothing may look like a good bundle
                report.gate, report.preflight = result.gate, result.preflight
                report.calibration, report.evaluation = result.calibration, result.evaluation
                raise GateFailedError(f"the {precision} artifact fails its gate ({_gate_summary(result.gate)}); "
                                      f"nothing was written to {output} - pass --eval SOURCE --max-drop X so that "
                                      "sensitive layers fall back, or choose another --precision")
            manifest = write_manifest(out_dir, {
                "target": {"name": target.name, "profile": target.to_dict()},
                "precision": precision,
                "recipe": recipe.name,
                "primary_artifact": result.primary_artifact,
                "runtime": result.runtime,
                "runtime_device": result.runtime_device,
                "source_model": _source_model(model, meta),
                "model_meta": asdict(meta),  # what apps and runtimes read (preprocessing, labels, task)
                "calibration": result.calibration,
                "evaluation": result.evaluation,
                "gate": result.gate,
                "preflight": result.preflight,
                "options": ctx.options,
                "tolerances": {k: v for k, v in config.tolerances.items() if v is not None},
                "command": command,
                "notes": notes,
                "extra": result.manifest_extra,
                "reference": reference,
                "toolchain_expected": {
                    f"{target.toolkit.name.lower().replace(' ', '')}_expected": target.toolkit.version,
                    "target_platform": target.toolkit.platform,
                },
            })
            out_dir.chmod(0o755)
            report.files = {rel: (out_dir / rel).stat().st_size for rel in manifest["files"]}
            report.manifest_sha256 = sha256_file(out_dir / MANIFEST)
            report.primary_artifact, report.runtime = result.primary_artifact, result.runtime
            report.runtime_device = result.runtime_device
            report.calibration, report.evaluation = result.calibration, result.evaluation
            report.gate, report.preflight = result.gate, result.preflight
    except GateFailedError as exc:  # quantization could not meet --max-drop: nothing was written
        quant = exc.report
        if quant is not None:
            report.gate = {**(getattr(quant, "metric", None) or {}), "max_drop": config.max_drop,
                           "fp32_fallback_nodes": list(getattr(quant, "fp32_fallback_nodes", []))}
            if getattr(quant, "parity", None) is not None:  # the parity gate judged the ladder
                report.gate.update(passed=False, parity=quant.parity, numerics=quant.numerics,
                                   rungs=[asdict(a) for a in quant.attempts])
                report.seconds = round(time.perf_counter() - t0, 3)
                err = GateFailedError(
                    f"the {precision} artifact fails its gate ({_gate_summary(report.gate)}) at every one of "
                    f"{len(quant.attempts)} fallback rung(s); nothing was written to {output} - pass --eval SOURCE "
                    "--max-drop X to judge by the task metric, or loosen --min-cosine/--max-channel-error", report)
                raise err from None
            report.calibration, report.evaluation = getattr(quant, "calibration", None), getattr(quant, "evaluation", None)
        report.seconds = round(time.perf_counter() - t0, 3)
        exc.report = report
        raise
    except PreflightFailedError as exc:
        report.preflight = exc.preflight
        report.seconds = round(time.perf_counter() - t0, 3)
        err = TargetError(f"{exc} (see the preflight lists; --option allow_unsupported=true writes the bundle anyway)")
        err.report = report  # type: ignore[attr-defined]
        raise err from None
    report.written = True
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
