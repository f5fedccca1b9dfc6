"""Host recipe (target ``local``): an ONNX Runtime CPU bundle to check a model here before shipping.

INT8 is ORT static QDQ from `medge.quantize.quantize_model` with its accuracy gate, then the shared
INT8 parity rule (`medge.quantize.parity_gate.int8_parity`): without a metric gate a QDQ model
that no longer tracks the FP32 one is refused.
"""

from __future__ import annotations

from medge.devices.recipes.base import (
    CompileContext, Recipe, RecipeResult, copy_onnx, int8_check, quantize_for_target,
)


class OnnxRuntimeRecipe(Recipe):
    """FP32 copy or ORT static-QDQ INT8 model, run by the ``onnxruntime`` runtime on the CPU."""

    name = "onnxruntime"

    def compile(self, ctx: CompileContext) -> RecipeResult:
        result = RecipeResult(primary_artifact="", runtime=ctx.target.runtime, runtime_device=ctx.target.runtime_device)
        if ctx.precision == "int8":
            name = "model.int8.onnx"
            outcome = quantize_for_target(ctx, ctx.out_dir / name, backend="ort")
            result.calibration, result.evaluation = outcome.calibration, outcome.evaluation
            result.gate = outcome.int8_gate(int8_check(ctx, outcome))
        else:
            name = "model.onnx"
            copy_onnx(ctx.onnx_path, ctx.out_dir / name)
        result.primary_artifact = name
        result.preflight = {"checker": "onnxruntime", "ok": True, "note": "ONNX Runtime CPU runs every standard ONNX op"}
        result.files = sorted(p.relative_to(ctx.out_dir).as_posix() for p in ctx.out_dir.rglob("*") if p.is_file())
        return result
