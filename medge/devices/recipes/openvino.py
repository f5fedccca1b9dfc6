"""Intel recipe (targets intel-cpu, intel-igpu, intel-npu): OpenVINO IR (``model.xml`` + ``model.bin``).

* fp32: the ONNX model converted as is; fp16: weights compressed to FP16
  (``openvino.save_model(..., compress_to_fp16=True)``); int8: NNCF post-training quantization with
  the accuracy gate, through `medge.quantize.quantize_model`'s ``openvino`` backend.
* The NPU needs static shapes: with the ``static_shapes`` option (or device NPU) every dynamic
  dimension is fixed (batch 1) before saving.
* Device and performance hints (``PERFORMANCE_HINT``, ``INFERENCE_PRECISION_HINT``,
  ``NUM_STREAMS``, ``CACHE_DIR``) go into the manifest (``extra.openvino``) for the app to use.
* Preflight: ``Core.query_model`` for devices whose plugin is present here (CPU), a static table
  otherwise.  Parity: the IR against the FP32 ONNX on the CPU with the f32 precision hint; INT8
  follows the shared rule of `medge.quantize.parity_gate` (without a metric gate, parity decides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medge.devices.recipes.base import (
    CompileContext,
    PreflightFailedError,
    Recipe,
    RecipeResult,
    quantize_for_target,
)
from medge.common.errors import TargetError
from medge.common.registry import import_optional
from medge.devices.delegate_ops import openvino_preflight

ARTIFACT = "model.xml"
# Max |IR - ONNX| / output range on the CPU with the f32 hint.
PARITY_REL_TOL = {"fp32": 1e-4, "fp16": 2e-2}


def _static_shapes(ov: Any, model: Any, shape: tuple[int, ...]) -> bool:
    """Fix every dynamic input dimension (batch → 1, others from the metadata shape); True if changed."""
    changed = False
    new_shapes = {}
    for port in model.inputs:
        partial = port.get_partial_shape()
        if partial.is_static:
            continue
        dims = [d.get_length() if d.is_static else (1 if i == 0 else shape[i]) for i, d in enumerate(partial)]
        new_shapes[port.get_any_name()] = ov.PartialShape(dims)
        changed = True
    if new_shapes:
        model.reshape(new_shapes)
    return changed


def _embed_metadata(model: Any, onnx_path: Path) -> None:
    """Copy the medge metadata of the ONNX file into the IR's ``rt_info`` under ``medge``."""
    import onnx

    props = onnx.load(str(onnx_path), load_external_data=False).metadata_props
    for p in props:
        if p.key.startswith("medge."):
            model.set_rt_info(p.value, ["medge", p.key.removeprefix("medge.")])


def runtime_config(ctx: CompileContext, device: str) -> dict[str, Any]:
    """The OpenVINO properties the app should compile the IR with on `device`."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": str(ctx.option("performance_hint", "LATENCY")).upper()}
    hint = ctx.option("inference_precision_hint")
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    elif device == "CPU":
        config["INFERENCE_PRECISION_HINT"] = "f32"  # CPUs with AMX would otherwise run bf16
    if ctx.option("num_streams") is not None:
        config["NUM_STREAMS"] = ctx.option("num_streams")
    if ctx.option("cache_dir"):
        config["CACHE_DIR"] = ctx.option("cache_dir")
    return config


def _readme(ctx: CompileContext, info: dict[str, Any]) -> str:
    """How to load the IR on the device with the recorded hints."""
    return "\n".join([
        f"OpenVINO IR ({ARTIFACT} + model.bin) for {ctx.target.display_name} ({ctx.precision}), "
        f"model '{ctx.meta.model}' ({ctx.meta.task}).",
        "Load it with the properties recorded in manifest.json (extra.openvino.config):",
        "  import openvino as ov",
        f"  compiled = ov.Core().compile_model('{ARTIFACT}', '{info['device']}', {info['config']!r})",
        f"Input shapes: {info['input_shapes']} (static: {info['static_shapes']}).",
        "Inputs are model-ready: apply the preprocessing in manifest.json (source_model.metadata.preprocessing).",
        "Check the bundle with 'medge verify <bundle>' and time it on the device with 'medge profile'.",
    ]) + "\n"


class OpenVINORecipe(Recipe):
    """FP32 / FP16-compressed / NNCF-INT8 OpenVINO IR for an Intel CPU, integrated GPU or NPU."""

    name = "openvino"

    def compile(self, ctx: CompileContext) -> RecipeResult:
        from medge.quantize.parity_gate import (
            artifact_runner,
            int8_parity,
            load_inputs,
            onnx_runner,
            parity_check,
        )

        ov = import_optional("openvino", what="the openvino compile recipe")
        device = ctx.target.runtime_device.upper()
        xml = ctx.out_dir / ARTIFACT
        result = RecipeResult(primary_artifact=ARTIFACT, runtime="openvino", runtime_device=device)
        static = bool(ctx.option("static_shapes", device == "NPU"))
        input_shape = self._input_shape(ctx)
        if ctx.precision == "int8":
            outcome = quantize_for_target(ctx, xml, backend="openvino")
            result.calibration, result.evaluation = outcome.calibration, outcome.evaluation
            model = ov.Core().read_model(str(xml))
            if static and _static_shapes(ov, model, input_shape):
                self._save(ov, model, xml, compress=False)
                result.notes.append("fixed dynamic input dimensions (batch 1) for the static-shape device")
        else:
            model = ov.convert_model(str(ctx.onnx_path))
            if static:
                _static_shapes(ov, model, input_shape)
            _embed_metadata(model, ctx.onnx_path)
            compress = ctx.precision == "fp16"
            if bool(ctx.option("compress_to_fp16", False)) != compress:
                result.notes.append(f"compress_to_fp16={compress} follows the requested precision {ctx.precision}")
            self._save(ov, model, xml, compress=compress)
        result.preflight = openvino_preflight(model, device)
        if not result.preflight["ok"] and not ctx.option("allow_unsupported", False):
            kinds = sorted({u["op"] for u in result.preflight["unsupported"]})
            raise PreflightFailedError(f"the {device} plugin cannot run ops {kinds}", result.preflight)

        runner = artifact_runner(xml, "openvino", precision="f32")
        if ctx.precision == "int8":
            parity = int8_parity(ctx.onnx_path, ctx.calib_source, runner, limits=ctx.parity_limits, device="CPU",
                                 precision_hint="f32")
            result.gate = outcome.int8_gate(parity)
        else:
            data = load_inputs(ctx.onnx_path, ctx.calib_source, n=8)
            parity = parity_check(onnx_runner(ctx.onnx_path), runner, data.inputs, rel_tol=PARITY_REL_TOL.get(ctx.precision))
            parity.update(device="CPU", precision_hint="f32", data=data.info)
            result.gate = {"kind": "parity", "passed": parity["passed"], "parity": parity}
            if parity["passed"] is False:
                raise TargetError(
                    f"the {ctx.precision} IR differs from the FP32 ONNX model by {parity['max_rel_diff']:.3g} "
                    f"(relative, limit {parity['rel_tol']}); this is an OpenVINO conversion problem, try --precision fp32"
                )
        shapes = {p.get_any_name(): [d.get_length() if d.is_static else -1 for d in p.get_partial_shape()] for p in model.inputs}
        result.manifest_extra = {
            "openvino": {
                "device": device,
                "config": runtime_config(ctx, device),
                "static_shapes": static,
                "input_shapes": shapes,
                "weights_fp16": ctx.precision == "fp16",
                "ir_files": [ARTIFACT, xml.with_suffix(".bin").name],
            }
        }
        (ctx.out_dir / "README.txt").write_text(_readme(ctx, result.manifest_extra["openvino"]))
        if device != "CPU":
            result.notes.append(f"no {device} here: the IR was checked on the CPU (f32); run 'medge profile' on the device")
        result.files = sorted(p.relative_to(ctx.out_dir).as_posix() for p in ctx.out_dir.rglob("*") if p.is_file())
        return result

    @staticmethod
    def _input_shape(ctx: CompileContext) -> tuple[int, ...]:
        from medge.calibration import onnx_input

        return tuple(onnx_input(ctx.onnx_path, ctx.meta)[1])

    @staticmethod
    def _save(ov: Any, model: Any, xml: Path, *, compress: bool) -> None:
        """Save the IR beside a temporary name, then move .xml/.bin into place."""
        tmp = xml.with_name(xml.stem + ".tmp.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=compress)
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp.replace(xml)
