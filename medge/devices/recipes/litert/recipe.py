"""Mobile recipe (android-qualcomm-npu, android-mediatek-npu, android-gpu): a LiteRT ``model.tflite``.

* int8: full-integer .tflite (int8 weights, activations, inputs and outputs) made by
  ai-edge-quantizer over the float .tflite with the gate-driven int8 → int16 → float ladder of
  `medge.devices.recipes.litert.ladder` (``quantizer=pt2e``: one litert-torch PT2E attempt), calibrated
  on the model's preprocessed calibration samples (every input of a multi-input model);
  fp16: FP32 graph with FP16 weights; fp32: plain float graph (GPU only).
* The PyTorch source is ``ctx.model_ref`` when it reproduces the ONNX outputs, otherwise the ONNX
  graph itself (in-house ONNX→PyTorch conversion), so an ONNX-only model works offline.
* I/O is channel-last (NHWC / NLC) by default, as the NPU and GPU delegates prefer
  (``channel_last_io`` option); the layout and the int8 (scale, zero_point) of every I/O tensor go
  into the manifest (``extra.litert``).
* Preflight: the .tflite's ops against the delegate's op table (which run on the NPU/GPU, which
  fall back to the CPU).  Gate: the .tflite against the FP32 ONNX on calibration data (cosine),
  plus the clinical metric drop on ``--eval`` data, failing the compile beyond ``--max-drop``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.devices.recipes.base import CompileContext, PreflightFailedError, Recipe, RecipeResult
from medge.common.errors import GateFailedError, TargetError, UsageError
from medge.common.reports import Report
from medge.quantize.ladder import Attempt
from medge.devices.delegate_ops import litert_preflight
from medge.devices.int8_numerics import Int8Numerics

ARTIFACT = "model.tflite"
README = "README.txt"
PARITY_SAMPLES = 8
# Parity of the .tflite against the FP32 ONNX: max |diff| / output range; int8 uses the shared
# INT8 limits of medge.quantize.parity_gate (cosine per sample, Pearson r per channel).
PARITY_REL_TOL = {"fp32": 1e-4, "fp16": 2e-2}
QUANTIZERS = ("aeq", "pt2e")
COVERAGE_GOAL = 0.9  # share of ops on the delegate below which the report says what blocks the rest


@dataclass
class GateFailure(Report):
    """The measurements behind a failed .tflite gate (what `compile_model` puts in its report)."""

    title: ClassVar[str] = "litert gate"
    metric: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    fp32_fallback_nodes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return False


@dataclass
class TfliteOutcome:
    """What `build_tflite` wrote and measured."""

    artifact: str
    preflight: dict[str, Any]
    gate: dict[str, Any]
    calibration: dict[str, Any] | None
    evaluation: dict[str, Any] | None
    extra: dict[str, Any]
    notes: list[str] = field(default_factory=list)


#: what the judge measures of each rung's .tflite (kept in `Attempt.gate`, listed beside it in the manifest)
ARTIFACT_FACTS = ("op_precisions", "coverage", "partitions")


def _judge(ctx: CompileContext, parity_inputs: list, delegate: str, channel_last: bool,
           float_as_fp16: bool) -> tuple[Callable[[Path, Attempt], Attempt], dict[int, tuple[dict, list]]]:
    """The gate of one .tflite (full-integer I/O, delegate coverage, parity and the metric), and the
    preflight and op list of each attempt it judged, by attempt index."""
    from medge.quantize.parity_gate import INT8_LIMITS, artifact_runner, metric_gate, onnx_runner, parity_check
    from medge.devices.recipes.litert.convert import tflite_ops
    from medge.devices.recipes.litert.ladder import op_precisions

    reference = onnx_runner(ctx.onnx_path)
    judged: dict[int, tuple[dict, list]] = {}

    def judge(path: Path, attempt: Attempt) -> Attempt:
        ops = tflite_ops(path)
        preflight = litert_preflight(ops, delegate, float_as_fp16=float_as_fp16)
        facts = {"op_precisions": op_precisions(ops), "coverage": preflight["coverage"],
                 "partitions": preflight["partitions"]}
        attempt.gate = dict(facts)  # kept if LiteRT refuses the .tflite below
        runner = artifact_runner(path, "litert", channel_last=channel_last)
        limits = (ctx.parity_limits or INT8_LIMITS) if ctx.precision == "int8" else {"rel_tol": PARITY_REL_TOL.get(ctx.precision)}
        parity = parity_check(reference, runner, parity_inputs, **limits)
        gate: dict[str, Any] = {"kind": "parity", "passed": parity["passed"], "parity": parity}
        summary = "; ".join(parity["failed"]) or ", ".join(
            f"{label} {parity[key]:.4f}" for label, key in (("min cosine", "min_cosine"), ("min Pearson r", "min_pearson"))
            if parity[key] is not None) or "parity measured"
        if ctx.eval_source:
            metric, evaluation = metric_gate(ctx.onnx_path, ctx.meta.task, runner, ctx.eval_source, ctx.max_drop,
                                             n=int(ctx.option("eval_samples", 300)))
            gate = {**metric, "kind": "metric", "parity": parity, "evaluation": evaluation}
            summary += f", {metric['name']} drop {metric['drop']:.4g} (max {ctx.max_drop})"
            if metric["passed"] is None:
                gate["passed"] = parity["passed"]
        attempt.gate = {**gate, "summary": summary + f", coverage {preflight['coverage']}, {preflight['partitions']} partition(s)",
                        **facts}
        attempt.passed = bool(gate["passed"])
        judged[attempt.index] = (preflight, ops)
        return attempt

    return judge, judged


def _attempt_dict(attempt: Attempt) -> dict[str, Any]:
    """One rung of the manifest's ``gate.ladder``: what moved, the .tflite's facts and the gate."""
    gate = attempt.gate
    return {"index": attempt.index, "action": attempt.action, "int16_ops": attempt.int16_tensors,
            "float_ops": attempt.fp32_nodes, "op_precisions": gate.get("op_precisions", {}),
            "coverage": gate.get("coverage"), "partitions": gate.get("partitions"),
            "gate": {k: v for k, v in gate.items() if k not in ("evaluation", "parity", *ARTIFACT_FACTS)},
            "passed": attempt.passed}


def build_tflite(ctx: CompileContext, *, delegate: str, channel_last: bool, float_as_fp16: bool = False) -> TfliteOutcome:
    """Convert ``ctx.onnx_path`` to ``ctx.out_dir/model.tflite`` at ``ctx.precision`` and check it.

    `delegate` names the op table for the preflight (``qnn``, ``neuron``, ``gpu``, ``xnnpack``).
    INT8 goes through the fallback ladder of `medge.devices.recipes.litert.ladder` (``quantizer=aeq``, the
    default) or one PT2E attempt (``quantizer=pt2e``).  When no attempt passes the gate,
    `GateFailedError` is raised (nothing is written); a failed preflight raises
    `PreflightFailedError` unless the ``allow_unsupported`` option is set.
    """
    from medge.quantize.parity_gate import load_inputs
    from medge.devices.recipes.litert.convert import convert_tflite, torch_source

    notes: list[str] = []
    calibration = None
    quantizer = str(ctx.option("quantizer", "aeq"))
    if quantizer not in QUANTIZERS:
        raise UsageError(f"unknown quantizer '{quantizer}' for a .tflite; choices: {', '.join(QUANTIZERS)}")
    if ctx.precision == "int8":
        calib = load_inputs(ctx.onnx_path, ctx.calib_source, n=int(ctx.option("calib_samples", 300)))
        calibration = {k: calib.info[k] for k in ("source", "sha256", "n")}
        parity_inputs = calib.inputs[:PARITY_SAMPLES]
    else:
        calib = None
        parity_inputs = load_inputs(ctx.onnx_path, ctx.calib_source, n=PARITY_SAMPLES).inputs
    source = torch_source(ctx.onnx_path, ctx.model_ref, parity_inputs[0])
    notes.extend(source.notes)
    path = ctx.out_dir / ARTIFACT
    judge, judged = _judge(ctx, parity_inputs, delegate, channel_last, float_as_fp16)
    if ctx.precision == "int8" and quantizer == "aeq":
        attempts = _aeq_ladder(ctx, source.module, calib.inputs, path, channel_last, judge,
                               prefer_float=bool(ctx.option("prefer_float_fallback", delegate == "xnnpack")))
    else:
        convert_tflite(source.module, parity_inputs[0], path, precision=ctx.precision,
                       calibration=calib.inputs if calib is not None else (), channel_last=channel_last)
        attempts = [judge(path, Attempt(0, f"all {ctx.precision} ({'pt2e' if ctx.precision == 'int8' else 'litert-torch'})"))]
    final = attempts[-1]
    ladder = [_attempt_dict(a) for a in attempts]
    if final.gate.get("kind") == "refused":  # the ladder ended on a .tflite LiteRT would not run
        tried = "; ".join(f"{a['action']}: {a['gate']['summary']}" for a in ladder)
        raise TargetError(f"no {ctx.precision} .tflite ran on LiteRT ({len(ladder)} attempt(s): {tried[-600:]}); "
                          "nothing was written — try --precision fp16")
    gate = {k: v for k, v in final.gate.items() if k not in ("evaluation", "summary", *ARTIFACT_FACTS)}
    evaluation = final.gate.get("evaluation")
    if ctx.precision == "int8":
        gate["ladder"] = ladder

        # LiteRT's CPU kernels (XNNPACK / built-ins) on this host; the NPU's are confirmed on the device
        gate["numerics"] = Int8Numerics("host-kernels", f"this host's LiteRT CPU kernels (delegate {delegate} "
                                                        "not run here)").to_dict()
    if not final.passed and gate["kind"] == "metric":
        tried = "; ".join(f"{a['action']}: {a['gate']['summary']}" for a in ladder)
        first = (judged[0][0].get("fallback_op_types") if 0 in judged else None) or []
        blocking = f"; ops off the delegate even in int8: {', '.join(first)}" if first else ""
        raise GateFailedError(
            f"no {ctx.precision} .tflite passed the gate with max drop {ctx.max_drop} ({len(ladder)} attempt(s): {tried})"
            f"{blocking}; nothing was written — "
            "try --precision fp16, more calibration data or a larger --max-drop",
            report=GateFailure(metric=gate, calibration=calibration, evaluation=evaluation),
        )
    from medge.runtimes import open_runtime

    with open_runtime(path, "litert") as rt:
        inputs, outputs = [t.to_dict() for t in rt.inputs()], [t.to_dict() for t in rt.outputs()]
    in_dtypes, out_dtypes = {t["dtype"] for t in inputs}, {t["dtype"] for t in outputs}
    float_outputs = "(float outputs)" in final.action  # the ladder's output rungs, or a refused output op
    if ctx.precision == "int8" and not (in_dtypes <= {"int8", "int16"} and (float_outputs or out_dtypes <= {"int8", "int16"})):
        raise TargetError(f"the INT8 .tflite has {sorted(in_dtypes | out_dtypes)} I/O instead of int8/int16; "
                          "the NPU delegates need full-integer I/O")
    if float_outputs:
        notes.append("the gate passed only with the output op(s) in float: the model's outputs are float32 "
                     "(computed on the CPU after the delegate)")
    preflight, final_ops = judged[final.index]
    if not preflight["ok"] and not ctx.option("allow_unsupported", False):
        raise PreflightFailedError(f"no op of the model runs on the {preflight['delegate_name']}", preflight)
    if preflight["cpu_ops"]:
        notes.append(
            f"{preflight['cpu_ops']} of {preflight['ops_total']} ops fall back to the CPU "
            f"({', '.join(preflight['fallback_op_types'])}); {preflight['partitions']} delegate partition(s)"
        )
    blockers = coverage_blockers(preflight, quantizer if ctx.precision == "int8" else None)
    if blockers:
        preflight["coverage_blockers"] = blockers
        notes.append(f"coverage {preflight['coverage']:.3f} is below {COVERAGE_GOAL:.2f}; what blocks it: "
                     + "; ".join(f"{b['ops']}: {b['why']}" for b in blockers))
    if len(attempts) > 1:
        notes.append(f"fallback ladder: attempt {final.index} ({final.action}) passed; "
                     f"int16 ops {final.int16_tensors}, float ops {final.fp32_nodes}")
    extra = {
        "litert": {
            "delegate": delegate,
            "io_layout": "channel_last" if channel_last else "channel_first",
            "inputs": inputs,
            "outputs": outputs,
            "full_integer": ctx.precision == "int8" and not float_outputs,
            "quantizer": quantizer if ctx.precision == "int8" else None,
            "op_precisions": final.gate["op_precisions"],
            "int16_ops": final.int16_tensors,
            "float_ops": final.fp32_nodes,
            "torch_source": {"kind": source.kind, "reference": source.reference},
            "ops": [op["op"] for op in final_ops],
        }
    }
    (ctx.out_dir / README).write_text(_readme(ctx, extra["litert"], preflight))
    return TfliteOutcome(ARTIFACT, preflight, gate, calibration, evaluation, extra, notes)


def _aeq_ladder(ctx: CompileContext, module: Any, calibration: list, path: Path, channel_last: bool, judge: Any,
                prefer_float: bool = False) -> list:
    """The float .tflite (in a scratch folder, not the bundle) quantized by the AEQ ladder into `path`;
    `prefer_float` (a CPU target: XNNPACK runs int16x8 slowly) tries float fallbacks before int16."""
    import sys

    from medge.devices.recipes.litert.convert import convert_tflite, model_layout
    from medge.devices.recipes.litert.ladder import run_ladder

    with tempfile.TemporaryDirectory(prefix="medge-tflite-") as scratch:
        float_path = Path(scratch) / "model.fp32.tflite"
        convert_tflite(module, calibration[0], float_path, precision="fp32", channel_last=channel_last)
        samples = [model_layout(c, channel_last) for c in calibration]
        return run_ladder(float_path, path, samples, judge, progress=lambda m: print(m, file=sys.stderr),
                          int16_steps=int(ctx.option("int16_steps", ctx.option("max_fallback_steps", 3))),
                          float_steps=int(ctx.option("float_steps", ctx.option("max_fallback_steps", 3))),
                          prefer_float=prefer_float)


def coverage_blockers(preflight: dict[str, Any], quantizer: str | None) -> list[dict[str, str]]:
    """Why a .tflite's delegate coverage is below `COVERAGE_GOAL`: its CPU ops grouped by cause.

    Empty when the coverage reaches the goal.  Causes: op types the quantizer has no integer recipe
    for (they stay float32, which the delegate does not take), the QUANTIZE/DEQUANTIZE pairs around
    those float islands, and ops the delegate's op table refuses for their own reason.
    """
    if preflight.get("coverage", 1.0) >= COVERAGE_GOAL or not preflight.get("fallback"):
        return []
    counts: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for entry in preflight["fallback"]:
        counts[entry["op"]] = counts.get(entry["op"], 0) + 1
        reasons.setdefault(entry["op"], entry.get("reason", ""))
    no_recipe: set[str] = set()
    if quantizer == "aeq":
        from medge.devices.recipes.litert.ladder import aeq_quantizable

        no_recipe = {op for op in counts if op not in ("QUANTIZE", "DEQUANTIZE") and not aeq_quantizable(op)}

    def listed(ops: list[str]) -> str:
        return ", ".join(f"{op} ×{counts[op]}" for op in sorted(ops, key=lambda o: (-counts[o], o)))

    blockers = []
    if no_recipe:
        blockers.append({"ops": listed(sorted(no_recipe)),
                         "why": "ai-edge-quantizer has no integer recipe for these op types, so they stay float32 "
                                "(the delegate runs float only as FP16, if at all)"})
    boundary = [op for op in counts if op in ("QUANTIZE", "DEQUANTIZE")]
    if boundary:
        blockers.append({"ops": listed(boundary), "why": "float32 (de)quantization at the edges of the float ops"})
    for op in sorted(set(counts) - no_recipe - set(boundary), key=lambda o: (-counts[o], o)):
        blockers.append({"ops": listed([op]), "why": reasons[op] or "not in the delegate's op table"})
    return blockers


def _readme(ctx: CompileContext, info: dict[str, Any], preflight: dict[str, Any]) -> str:
    """How to run the .tflite on the device (I/O dtype, layout, quantization, delegate)."""
    lines = [
        f"{ARTIFACT} for {ctx.target.display_name} ({ctx.precision}), model '{ctx.meta.model}' ({ctx.meta.task}).",
        f"Delegate: {preflight['delegate_name']}: {preflight['accelerated_ops']} of {preflight['ops_total']} ops "
        f"accelerated, {preflight['cpu_ops']} on the CPU (see manifest.json 'preflight').",
        f"I/O layout: {info['io_layout'].replace('_', '-')} (channel-last means NHWC images / NLC signals).",
    ]
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = t.get("quantization")
            quant = f", real = (q - {q['zero_point']}) * {q['scale']:.6g}" if q else ""
            lines.append(f"{kind[:-1]} {t['name']}: {t['dtype']} {t['shape']}{quant}")
    lines += [
        "Inputs are model-ready: apply the preprocessing in manifest.json (source_model.metadata.preprocessing),",
        "then quantize with the input's scale/zero point when the input is int8.",
        "Check the bundle with 'medge verify <bundle>' and time it on the device with 'medge profile'.",
    ]
    return "\n".join(lines) + "\n"


class LiteRTRecipe(Recipe):
    """INT8 (full-integer) / FP16 / FP32 .tflite for a phone NPU or GPU through a LiteRT delegate."""

    name = "litert"
    option_choices = {"quantizer": QUANTIZERS}

    def compile(self, ctx: CompileContext) -> RecipeResult:
        delegate = str(ctx.option("delegate", "gpu"))
        io_dtype = str(ctx.option("io_dtype", "int8" if ctx.precision == "int8" else "float32"))
        if ctx.precision == "int8" and io_dtype != "int8":
            raise UsageError(f"int8 .tflite models for '{ctx.target.name}' have int8 I/O; drop --option io_dtype={io_dtype}")
        channel_last = bool(ctx.option("channel_last_io", True))
        float_as_fp16 = ctx.precision == "fp16" or ctx.target.runtime_device.upper() == "GPU"
        outcome = build_tflite(ctx, delegate=delegate, channel_last=channel_last, float_as_fp16=float_as_fp16)
        notes = list(outcome.notes)
        if ctx.precision != "int8" and io_dtype != "float32":
            notes.append(f"a {ctx.precision} .tflite has float32 I/O (io_dtype={io_dtype} applies to int8 only)")
        notes.append(
            f"runs on the {outcome.preflight['delegate_name']} on the device; checked here on the LiteRT CPU interpreter"
        )
        return RecipeResult(
            primary_artifact=outcome.artifact, runtime="litert", runtime_device=ctx.target.runtime_device,
            files=[outcome.artifact, README], preflight=outcome.preflight, gate=outcome.gate, notes=notes,
            manifest_extra=outcome.extra, calibration=outcome.calibration, evaluation=outcome.evaluation,
        )
