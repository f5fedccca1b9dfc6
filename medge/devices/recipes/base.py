"""The recipe interface: how one family of targets turns an FP32 ONNX model into a bundle.

`medge.devices.compile_model` validates the request against the target's profile, creates a
temporary bundle folder, calls ``RECIPES.get(target.recipe)().compile(ctx)``, writes the manifest
from the returned `RecipeResult` and renames the folder into place.  A recipe only writes files
into ``ctx.out_dir`` (scratch files go to ``ctx.work_dir``) and raises a `MedgeError` subclass for
anything the user can fix.

Recipes are registered lazily by ``"module:Class"`` so that importing this module never imports
TensorRT, OpenVINO or LiteRT.  Each recipe module defines the class named below.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medge.common.registry import Registry
from medge.devices.int8_numerics import int8_scheme, target_numerics
from medge.quantize import quantize_model
from medge.quantize.config import QuantizeConfig

if TYPE_CHECKING:
    from medge.devices.target import DeviceProfile
    from medge.common.metadata import ModelMeta


@dataclass
class CompileContext:
    """Everything a recipe needs; built and validated by `compile_model`."""

    onnx_path: Path  # FP32 ONNX with medge metadata (exported by medge.export)
    meta: "ModelMeta"  # medge.common.metadata.read_metadata(onnx_path)
    target: "DeviceProfile"
    precision: str  # "fp32" | "fp16" | "int8" (already validated against the target)
    calib_source: str | None  # e.g. "synthetic:cxr" or a folder; load it via medge.calibration
    eval_source: str | None
    max_drop: float | None
    out_dir: Path  # temporary bundle folder being filled (renamed when complete)
    work_dir: Path  # scratch space, deleted afterwards
    model_ref: str | None = None  # zoo name or module:factory when the PyTorch source is known
    options: dict[str, Any] = field(default_factory=dict)  # target compile options + user overrides
    build_engine: bool = False  # build the device artifact here when the toolkit imports (TensorRT)
    #: INT8 parity limits with the user's tolerances (`medge.quantize.parity_gate.int8_limits`); None: the defaults
    parity_limits: dict[str, float | None] | None = None

    def option(self, key: str, default: Any = None) -> Any:
        """A compile option (user override, else the target's default, else `default`)."""
        value = self.options.get(key)
        return default if value is None else value


@dataclass
class RecipeResult:
    """What a recipe wrote and how to run it."""

    primary_artifact: str  # relative path inside out_dir
    runtime: str  # medge.runtimes registry name that runs primary_artifact here/on the device
    runtime_device: str  # e.g. "CPU", "GPU", "NPU", "cuda", "DLA"
    files: list[str] = field(default_factory=list)  # every file written (relative); informative only
    preflight: dict[str, Any] = field(default_factory=dict)  # op coverage: supported/fallback/unsupported
    gate: dict[str, Any] | None = None  # quantization gate: metric, drop, ci95, passed, fp32_fallback_nodes
    notes: list[str] = field(default_factory=list)
    manifest_extra: dict[str, Any] = field(default_factory=dict)  # hints etc., stored under "extra"
    calibration: dict[str, Any] | None = None  # {source, sha256, n} of the data actually used
    evaluation: dict[str, Any] | None = None  # {source, sha256, n}


class Recipe(abc.ABC):
    """Compiles for one family of targets.  Subclasses set `name` and implement `compile`."""

    name: str = "recipe"
    builds_device_artifact: bool = False  # supports --build-engine (building the device artifact here)
    option_choices: dict[str, tuple[str, ...]] = {}  # options with a closed set of values, checked up front

    @abc.abstractmethod
    def compile(self, ctx: CompileContext) -> RecipeResult:
        """Fill ``ctx.out_dir`` with the target's artifact(s) and return what was written."""


RECIPES: Registry[type[Recipe]] = Registry("compile recipe")
RECIPES.register("tensorrt", "medge.devices.recipes.tensorrt:TensorRTRecipe")
RECIPES.register("openvino", "medge.devices.recipes.openvino:OpenVINORecipe")
RECIPES.register("litert", "medge.devices.recipes.litert.recipe:LiteRTRecipe")
RECIPES.register("arm", "medge.devices.recipes.arm:ArmRecipe")
RECIPES.register("onnxruntime", "medge.devices.recipes.onnxruntime:OnnxRuntimeRecipe")


class PreflightFailedError(Exception):
    """Raised by a recipe when op coverage shows the target cannot run the model.

    `compile_model` turns it into a `TargetError` carrying a failed `CompileReport` (with the
    preflight lists), so the user sees which nodes fail before anything is written.
    """

    def __init__(self, message: str, preflight: dict[str, Any]) -> None:
        super().__init__(message)
        self.preflight = preflight


def copy_onnx(src: Path, dst: Path) -> list[str]:
    """Copy an ONNX model (with any external data folded in) to `dst`; returns the file names written."""
    import onnx

    model = onnx.load(str(src))  # loads external data from beside src
    if model.ByteSize() < 1_800_000_000:
        onnx.save_model(model, str(dst))
        return [dst.name]
    data_name = dst.name + ".data"
    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
    return [dst.name, data_name]


@dataclass
class QuantizeOutcome:
    """What `quantize_for_target` produced, in the manifest's terms."""

    artifact: Path
    gate: dict[str, Any] | None
    calibration: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    report: Any  # medge.quantize.report.QuantizeReport
    numerics: dict[str, Any] | None = None  # whose INT8 numerics judged it (`medge.devices.int8_numerics`)
    scheme: dict[str, Any] | None = None  # the ORT scheme chosen so that the target's kernels cannot saturate

    def int8_gate(self, parity: dict[str, Any] | None) -> dict[str, Any]:
        """The manifest's INT8 gate: the metric gate (if any) with `parity` (default: the ladder's own),
        the numerics, the scheme and every rung of the fallback ladder."""
        from medge.quantize.parity_gate import gate_with_parity

        gate = gate_with_parity(self.gate, parity if parity is not None else self.report.parity)
        gate["numerics"] = self.numerics
        if self.scheme is not None:
            gate["int8_scheme"] = self.scheme
        gate["rungs"] = [asdict(a) for a in self.report.attempts]
        gate["fp32_fallback_nodes"] = list(self.report.fp32_fallback_nodes)
        gate["int16_activation_tensors"] = list(self.report.int16_activation_tensors)
        return gate


def quantize_for_target(
    ctx: CompileContext,
    output: Path,
    *,
    backend: str = "ort",
    trt_compatible: bool = False,
    options: dict[str, Any] | None = None,
) -> QuantizeOutcome:
    """INT8-quantize ``ctx.onnx_path`` to `output` with `medge.quantize.quantize_model`.

    Uses the context's calibration/evaluation sources and gate (`max_drop`; without one, the parity
    limits judge every rung of the fallback ladder on the target's numerics, `int8_numerics`); the sample counts
    come from the ``calib_samples`` and ``eval_samples`` compile options (default 300).  A failed gate raises
    `GateFailedError` (from `quantize_model`), which aborts the compile with nothing written.
    """
    from medge.quantize.parity_gate import INT8_LIMITS

    numerics = target_numerics(ctx.target)
    options = dict(options or {})
    scheme = None
    if backend == "ort" and not trt_compatible:
        scheme = int8_scheme(ctx.target, numerics)
        options["reduce_range"] = scheme["reduce_range"]
    config = QuantizeConfig(
        model=ctx.onnx_path,
        output=output,
        precision="int8",
        backend=backend,
        calib_source=ctx.calib_source,
        calib_size=int(ctx.option("calib_samples", 300)),
        eval_source=ctx.eval_source,
        eval_size=int(ctx.option("eval_samples", 300)),
        max_drop=ctx.max_drop,
        max_fallback_steps=int(ctx.option("max_fallback_steps", QuantizeConfig.max_fallback_steps)),
        trt_compatible=trt_compatible,
        options=options,
        parity_limits=ctx.parity_limits or INT8_LIMITS,
        runtime_options=dict(numerics.runtime_options),
        numerics=numerics.to_dict(),
    )
    report = quantize_model(config)
    gate = None
    if report.metric is not None:
        gate = {**report.metric, "max_drop": ctx.max_drop, "fp32_fallback_nodes": list(report.fp32_fallback_nodes)}
    return QuantizeOutcome(output, gate, _with_n(report.calibration), _with_n(report.evaluation), report,
                           numerics.to_dict(), scheme)


def _with_n(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """A data summary with ``n`` (the number of samples actually used) next to source and sha256."""
    if summary is None:
        return None
    return {**summary, "n": summary.get("used", summary.get("samples"))}


def int8_check(ctx: CompileContext, outcome: QuantizeOutcome) -> dict[str, Any]:
    """The INT8 parity of an ORT artifact on the target's numerics: the ladder's own result when it
    judged by parity (same samples, limits and numerics), else measured now (a metric gate ran)."""
    if outcome.report.parity is not None:
        return outcome.report.parity
    from medge.quantize.parity_gate import INT8_LIMITS, artifact_runner, int8_parity

    options = dict((outcome.numerics or {}).get("runtime_options") or {})
    return int8_parity(ctx.onnx_path, ctx.calib_source, artifact_runner(outcome.artifact, "onnxruntime", **options),
                       limits=ctx.parity_limits or INT8_LIMITS, runtime="onnxruntime-cpu")
