"""Raspberry Pi / ARM CPU recipe (raspberry-pi-5): ONNX Runtime or LiteRT with XNNPACK on the CPU.

The ``runtime`` compile option picks the artifact (default: the target's runtime):

* ``onnxruntime``: the FP32 ONNX model, or a static QDQ INT8 model (uint8 activations, int8
  per-channel weights — the fast path of ORT's Arm NEON/dot-product kernels) made by
  `medge.quantize.quantize_model` with its accuracy gate.
* ``litert``: a .tflite run by XNNPACK — FP32, or full-integer INT8 from litert-torch (int8 I/O,
  channel-first like the ONNX model; XNNPACK has no layout preference).

The thread count (``threads`` option) and provider go into the manifest (``extra``).
"""

from __future__ import annotations

from medge.devices.recipes.base import (
    CompileContext, Recipe, RecipeResult, copy_onnx, int8_check, quantize_for_target,
)
from medge.common.errors import UsageError
from medge.devices.recipes.litert.recipe import build_tflite

RUNTIMES = ("onnxruntime", "litert")


def _ort_readme(ctx: CompileContext, artifact: str, threads: int | None) -> str:
    """How to run the ONNX model with ONNX Runtime on the board."""
    return "\n".join([
        f"{artifact} for {ctx.target.display_name} ({ctx.precision}), model '{ctx.meta.model}' ({ctx.meta.task}).",
        f"Needs {ctx.target.toolkit.name} {ctx.target.toolkit.version} on {ctx.target.toolkit.platform} (pip install onnxruntime).",
        "  import onnxruntime as ort",
        "  so = ort.SessionOptions()",
        f"  so.intra_op_num_threads = {threads or 0}",
        f"  sess = ort.InferenceSession('{artifact}', so, providers=['CPUExecutionProvider'])",
        "Inputs are model-ready float32: apply the preprocessing in manifest.json (source_model.metadata.preprocessing).",
        "Check the bundle with 'medge verify <bundle>' and time it on the board with 'medge profile'.",
    ]) + "\n"


class ArmRecipe(Recipe):
    """ONNX Runtime (FP32 / QDQ INT8) or LiteRT+XNNPACK (FP32 / INT8) bundle for an ARM CPU board."""

    name = "arm"
    option_choices = {"runtime": RUNTIMES}

    def compile(self, ctx: CompileContext) -> RecipeResult:
        runtime = str(ctx.option("runtime", ctx.target.runtime))
        if runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime '{runtime}' for target '{ctx.target.name}'; choices: {', '.join(RUNTIMES)}")
        threads = ctx.option("threads")
        result = self._litert(ctx) if runtime == "litert" else self._onnxruntime(ctx)
        result.manifest_extra.setdefault(runtime, {})["threads"] = threads
        if runtime == "onnxruntime":
            (ctx.out_dir / "README.txt").write_text(_ort_readme(ctx, result.primary_artifact, threads))
        result.files = sorted(p.relative_to(ctx.out_dir).as_posix() for p in ctx.out_dir.rglob("*") if p.is_file())
        return result

    def _onnxruntime(self, ctx: CompileContext) -> RecipeResult:
        result = RecipeResult(primary_artifact="", runtime="onnxruntime", runtime_device="CPU")
        extra = {"execution_provider": "CPUExecutionProvider", "graph_optimization_level": "ORT_ENABLE_ALL"}
        if ctx.precision == "int8":
            quant_format = str(ctx.option("quant_format", "QDQ")).upper()
            activations = str(ctx.option("activation_type", "uint8")).lower()
            if (quant_format, activations) != ("QDQ", "uint8"):
                raise UsageError(
                    f"the ARM recipe writes QDQ INT8 with uint8 activations (the fast ORT CPU path); "
                    f"got quant_format={quant_format}, activation_type={activations}"
                )
            name = "model.int8.onnx"
            outcome = quantize_for_target(ctx, ctx.out_dir / name, backend="ort")
            result.calibration, result.evaluation = outcome.calibration, outcome.evaluation
            result.gate = outcome.int8_gate(int8_check(ctx, outcome))
            extra.update(quant_format="QDQ", activation_type="uint8", weight_type="int8-per-channel")
        else:
            name = "model.onnx"
            copy_onnx(ctx.onnx_path, ctx.out_dir / name)
            result.notes.append("FP32: the exported ONNX model as is")
        result.primary_artifact = name
        result.preflight = {"checker": "onnxruntime", "device": "CPU", "ok": True,
                            "note": "ONNX Runtime's CPU provider runs every standard ONNX op (aarch64 build)"}
        result.manifest_extra = {"onnxruntime": extra}
        return result

    def _litert(self, ctx: CompileContext) -> RecipeResult:
        outcome = build_tflite(ctx, delegate="xnnpack", channel_last=False)
        notes = [*outcome.notes, "LiteRT applies XNNPACK by default on aarch64; ops it does not take use the built-in CPU kernels"]
        return RecipeResult(
            primary_artifact=outcome.artifact, runtime="litert", runtime_device="CPU", preflight=outcome.preflight,
            gate=outcome.gate, notes=notes, manifest_extra=outcome.extra, calibration=outcome.calibration,
            evaluation=outcome.evaluation,
        )
