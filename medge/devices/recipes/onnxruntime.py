"""Host recipe (target ``local``): an ONNX Runtime CPU bundle to check a model here before shipping.

INT8 is ORT static QDQ from `medge.quantize.quantize_model` with its accuracy gate, then the shared
INT8 parity rule (`medge.devices.recipe_parity.int8_parity`): without a metric gate a QDQ model
that no longer tracks the FP32 one is refused.
"""

from __future__ import annotations

from medge.devices.recipes.base import CompileContext, Recipe, RecipeResult, copy_onnx, quantize_for_target


class OnnxRuntimeRecipe(Recipe):
    """FP32 copy or ORT static-QDQ INT8 model, run by the ``onnxruntime`` runtime on the CPU."""

    name = "onnxruntime"

    def compile(self, ctx: CompileContext) -> RecipeResult:
        result = RecipeResult(primary_artifact="", runtime=ctx.target.runtime, runtime_device=ctx.target.runtime_device)
        if ctx.precision == "int8":
            name = "model.int8.onnx"
            from medge.devices.recipe_parity import artifact_runner, gate_with_parity, int8_parity

            outcome = quantize_for_target(ctx, ctx.out_dir / name, backend="ort")
            result.calibration, result.evaluation = outcome.calibration, outcome.evaluation
            parity = int8_parity(ctx.onnx_path, ctx.calib_source, artifact_runner(ctx.out_dir / name, "onnxruntime"),
                                 runtime="onnxruntime-cpu")
            result.gate = gate_with_parity(outcome.gate, parity)
        else:
            name = "model.onnx"
            copy_onnx(ctx.onnx_path, ctx.out_dir / name)
        result.primary_artifact = name
        result.preflight = {"checker": "onnxruntime", "ok": True, "note": "ONNX Runtime CPU runs every standard ONNX op"}
        result.files = sorted(p.relative_to(ctx.out_dir).as_posix() for p in ctx.out_dir.rglob("*") if p.is_file())
        return result
