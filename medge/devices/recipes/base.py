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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medge.registry import Registry

if TYPE_CHECKING:
    from medge.devices.target import DeviceProfile
    from medge.metadata import ModelMeta


@dataclass
class CompileContext:
    """Everything a recipe needs; built and validated by `compile_model`."""

    onnx_path: Path  # FP32 ONNX with medge metadata (exported by medge.export)
    meta: "ModelMeta"  # medge.metadata.read_metadata(onnx_path)
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
RECIPES.register("litert", "medge.devices.recipes.litert:LiteRTRecipe")
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


def quantize_for_target(
    ctx: CompileContext,
    output: Path,
    *,
    backend: str = "ort",
    trt_compatible: bool = False,
    options: dict[str, Any] | None = None,
) -> QuantizeOutcome:
    """INT8-quantize ``ctx.onnx_path`` to `output` with `medge.quantize.quantize_model`.

    Uses the context's calibration/evaluation sources and gate (`max_drop`); the sample counts
    come from the ``calib_samples`` and ``eval_samples`` compile options (default 300).  A failed gate raises
    `GateFailedError` (from `quantize_model`), which aborts the compile with nothing written.
    """
    from medge.quantize import quantize_model
    from medge.quantize.config import QuantizeConfig

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
        trt_compatible=trt_compatible,
        options=dict(options or {}),
    )
    report = quantize_model(config)
    gate = None
    if report.metric is not None:
        gate = {**report.metric, "max_drop": ctx.max_drop, "fp32_fallback_nodes": list(report.fp32_fallback_nodes)}
    return QuantizeOutcome(output, gate, _with_n(report.calibration), _with_n(report.evaluation), report)


def _with_n(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """A data summary with ``n`` (the number of samples actually used) next to source and sha256."""
    if summary is None:
        return None
    return {**summary, "n": summary.get("used", summary.get("samples"))}
