"""Jetson recipe: an ONNX model TensorRT can parse + scripts that build the engine on the device.

The bundle holds the FP32 ONNX (FP32/FP16 builds) or an explicit-Q/DQ INT8 ONNX (symmetric int8
activations, per-channel int8 weights, which TensorRT consumes without a calibrator), an
``engine_config.json`` with every build setting from the device profile, ``build_engine.sh``
(trtexec), the standalone ``build_engine.py`` (TensorRT Python API) and a README.  Engines are not
portable across devices or TensorRT versions, so they are built on the device; with
``--build-engine`` and a working ``tensorrt`` import the engine is built here too.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from medge.devices.recipes.base import (
    CompileContext,
    PreflightFailedError,
    Recipe,
    RecipeResult,
    copy_onnx,
    quantize_for_target,
)
from medge.common.errors import MedgeError, TargetError
from medge.common.registry import import_optional
from medge.devices.tensorrt_ops import check_tensorrt_ops

ENGINE = "device/model.engine"
TIMING_CACHE_DIR = "device"
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _version(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def engine_inputs(onnx_path: Path, opts: dict[str, Any], dla: bool) -> list[dict[str, Any]]:
    """Input names with min/opt/max shapes (the batch range from the options when it is dynamic)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
        if any(d is None for d in dims[1:]):
            raise TargetError(
                f"input '{inp.name}' has dynamic non-batch dimensions {dims}; TensorRT needs them fixed "
                "(re-export with a static --input-shape)"
            )
        rest = [int(d) for d in dims[1:]]
        if dims and dims[0] is None:
            lo, opt, hi = int(opts.get("min_batch") or 1), int(opts.get("opt_batch") or 1), int(opts.get("max_batch") or 1)
            if dla:  # DLA engines are built for one static batch
                lo = hi = opt
            if not lo <= opt <= hi:
                raise TargetError(f"batch range must satisfy min_batch <= opt_batch <= max_batch, got {lo}, {opt}, {hi}")
            shapes = {"min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]}
        else:
            static = [int(d) for d in dims]
            shapes = {"min": static, "opt": static, "max": static}
        inputs.append({"name": inp.name, **shapes})
    return inputs


def engine_config(ctx: CompileContext, onnx_name: str) -> dict[str, Any]:
    """Every engine build setting, from the profile's compile options and the precision."""
    target, opts = ctx.target, ctx.options
    version = _version(target.toolkit.version)
    int8 = ctx.precision == "int8"
    dla_core = opts.get("dla_core") if target.uses_dla else None
    if dla_core is not None and not 0 <= int(dla_core) < target.dla_cores:
        raise TargetError(f"dla_core {dla_core} does not exist on {target.name} (it has {target.dla_cores} DLA cores)")
    # TensorRT >= 10 builds explicit-Q/DQ networks strongly typed (layers outside Q/DQ stay FP32) unless
    # strongly_typed=false asks for --int8 --fp16; DLA and TensorRT 8 always use the int8+fp16 flags.
    can_type = int8 and version >= (10, 0) and dla_core is None
    wanted = opts.get("strongly_typed")
    if wanted and not can_type:
        raise TargetError(f"strongly_typed needs int8 on a TensorRT 10 GPU target; {target.name} runs "
                          f"TensorRT {target.toolkit.version}{' on a DLA core' if dla_core is not None else ''}")
    strongly_typed = can_type and wanted is not False
    level = opts.get("builder_optimization_level")
    return {
        "target": target.name,
        "tensorrt_version": target.toolkit.version,
        "platform": target.toolkit.platform,
        "onnx": onnx_name,
        "engine": ENGINE,
        "timing_cache": f"{TIMING_CACHE_DIR}/{opts.get('timing_cache') or 'timing.cache'}",
        "precision": ctx.precision,
        "precision_mode": _precision_mode(ctx.precision, strongly_typed),
        # TensorRT builder flags that realise `precision` (with strongly_typed, int8 comes from the Q/DQ nodes)
        "builder_flags": {
            "strongly_typed": strongly_typed,
            "fp16": not strongly_typed and ctx.precision in ("fp16", "int8"),
            "int8": int8 and not strongly_typed,
        },
        "workspace_mb": int(opts.get("workspace_mb") or 1024),
        "builder_optimization_level": None if level is None or version < (8, 6) else int(level),
        "dla_core": None if dla_core is None else int(dla_core),
        "allow_gpu_fallback": bool(opts.get("allow_gpu_fallback")) if dla_core is not None else False,
        "inputs": engine_inputs(ctx.onnx_path, opts, dla_core is not None),  # Q/DQ keeps the FP32 inputs
    }


def _precision_mode(precision: str, strongly_typed: bool) -> str:
    """How the engine gets its precision, in words (so `precision` and the builder flags never look contradictory)."""
    if precision == "int8" and strongly_typed:
        return ("int8 from the explicit Q/DQ nodes of the ONNX, strongly typed (--stronglyTyped; layers outside "
                "Q/DQ stay fp32)")
    if precision == "int8":
        return "int8 from the explicit Q/DQ nodes (--int8), other layers may pick fp16 (--fp16)"
    return {"fp16": "fp16 kernels allowed (--fp16)", "fp32": "fp32 only (no precision flag)"}.get(precision, precision)


def _shape_arg(inputs: list[dict[str, Any]], key: str) -> str:
    return ",".join(f"{i['name']}:{'x'.join(str(d) for d in i[key])}" for i in inputs)


def trtexec_args(cfg: dict[str, Any]) -> list[str]:
    """The trtexec command line (relative to the bundle folder) for an engine config."""
    version = _version(cfg["tensorrt_version"])
    args = ["trtexec", f"--onnx={cfg['onnx']}", f"--saveEngine={cfg['engine']}"]
    flags = cfg["builder_flags"]
    if flags["strongly_typed"]:
        args.append("--stronglyTyped")
    if flags["fp16"]:
        args.append("--fp16")
    if flags["int8"]:
        args.append("--int8")
    if cfg["dla_core"] is not None:
        args.append(f"--useDLACore={cfg['dla_core']}")
        if cfg["allow_gpu_fallback"]:
            args.append("--allowGPUFallback")
    mb = cfg["workspace_mb"]
    if version >= (10, 0):
        args.append(f"--memPoolSize=workspace:{mb}M")
    elif version >= (8, 4):
        args.append(f"--memPoolSize=workspace:{mb}")
    else:
        args.append(f"--workspace={mb}")
    args.append(f"--timingCacheFile={cfg['timing_cache']}")
    if cfg["builder_optimization_level"] is not None:
        args.append(f"--builderOptimizationLevel={cfg['builder_optimization_level']}")
    if any(i["min"] != i["max"] for i in cfg["inputs"]):
        args += [f"--minShapes={_shape_arg(cfg['inputs'], 'min')}", f"--optShapes={_shape_arg(cfg['inputs'], 'opt')}",
                 f"--maxShapes={_shape_arg(cfg['inputs'], 'max')}"]
    return args


def _build_script(cfg: dict[str, Any]) -> str:
    flags = " \\\n  ".join(shlex.quote(a) for a in trtexec_args(cfg)[1:])
    return f"""#!/usr/bin/env bash
# Build the TensorRT engine of this medge bundle ON THE TARGET DEVICE ({cfg['target']}).
# Expected: TensorRT {cfg['tensorrt_version']} ({cfg['platform']}). Engines are not portable across devices
# or TensorRT versions. Alternative without trtexec: python3 build_engine.py
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if [ ! -x "$TRTEXEC" ]; then
  echo "build_engine.sh: trtexec not found; install TensorRT {cfg['tensorrt_version']} or run: python3 build_engine.py" >&2
  exit 3
fi
mkdir -p {shlex.quote(str(Path(cfg['engine']).parent))}
"$TRTEXEC" \\\n  {flags}
echo "engine written to {cfg['engine']}"
"""


def _io_lines(onnx_path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def text(value) -> str:
        dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]
        return f"{value.name} {'x'.join(dims)} {onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower()}"

    return ([f"  input   {text(v)}" for v in model.graph.input if v.name not in inits]
            + [f"  output  {text(v)}" for v in model.graph.output])


def _readme(cfg: dict[str, Any], preflight: dict[str, Any], ctx: CompileContext, onnx_path: Path) -> str:
    """How to build, run, profile and check the engine on the device, and what goes in and out."""
    meta = ctx.meta
    pre = meta.preprocessing or {}
    pre_text = ", ".join(f"{k} {v}" for k, v in pre.items() if v not in (None, [], {})) or "none recorded"
    labels = ", ".join(meta.labels) if meta.labels else "none (see the task)"
    engine = cfg["engine"]
    lines = [
        f"medge bundle for {cfg['target']} ({cfg['precision']}): model '{meta.model}' ({meta.task})",
        "",
        "1. Build the engine ON THE DEVICE",
        f"TensorRT engines are not portable across devices or TensorRT versions. Build it on the {cfg['target']}",
        f"itself, with TensorRT {cfg['tensorrt_version']} ({cfg['platform']}):",
        "",
        "    bash build_engine.sh          # uses trtexec",
        "    python3 build_engine.py       # uses the tensorrt Python package",
        "",
        f"Both read the same settings (engine_config.json) and write {engine}.",
        f"Precision: {cfg['precision_mode']}.",
    ]
    if cfg["dla_core"] is not None:
        fallback = ", ".join(sorted({f["op"] for f in preflight.get("fallback", [])})) or "none"
        lines.append(f"DLA core {cfg['dla_core']}; ops that will run on the GPU instead of the DLA: {fallback}")
    lines += [
        "",
        "2. Run and profile it",
        "    medge profile <bundle>        # uses the engine once it exists (latency, memory, per-layer times)",
        f"    trtexec --loadEngine={engine} --iterations=100 --dumpProfile",
        "Apps open the bundle folder; medge picks the engine, so nothing changes after building it.",
        "",
        "3. Check the engine against the reference outputs",
        "The bundle stores inputs (reference/inputs.npz) and the FP32 model's outputs on them",
        "(reference/outputs.npz). On the device, after building the engine:",
        "    medge compare <bundle> --reference",
        "It fails when the cosine similarity or max abs error is outside the limits for this precision.",
        "",
        "Inputs and outputs (inputs are model-ready: apply the preprocessing first):",
        *_io_lines(onnx_path),
        f"Layout: {meta.input_layout}",
        f"Preprocessing: {pre_text}",
        f"Labels (output order): {labels}",
        "",
        "Check the bundle before copying it:  medge verify <bundle> --expect-sha256 <sha256 printed by compile>",
    ]
    return "\n".join(lines) + "\n"


def _qdq_parity(ctx: CompileContext, qdq: Path) -> dict[str, Any]:
    """The explicit-Q/DQ ONNX against the FP32 model (the shared INT8 rule), run by ONNX Runtime as
    written (Q/DQ emulated in float), as TensorRT computes it whatever int8 kernels this CPU has."""
    from medge.quantize.parity_gate import artifact_runner, int8_parity

    return int8_parity(ctx.onnx_path, ctx.calib_source, artifact_runner(qdq, "onnxruntime", emulate_qdq=True),
                       limits=ctx.parity_limits, runtime="onnxruntime-cpu, Q/DQ emulated (TensorRT runs the same Q/DQ graph)")


class TensorRTRecipe(Recipe):
    """Jetson (GPU or DLA) bundles for TensorRT."""

    name = "tensorrt"
    builds_device_artifact = True

    def compile(self, ctx: CompileContext) -> RecipeResult:
        table = ctx.target.supported_ops
        if not isinstance(table, str):
            raise TargetError(f"target '{ctx.target.name}' names no TensorRT op table (supported_ops)")
        dla = ctx.target.uses_dla
        allow = bool(ctx.option("allow_unsupported", False))
        pre = check_tensorrt_ops(ctx.onnx_path, table, dla=dla)
        if not pre.ok and not allow:
            raise PreflightFailedError(
                f"{len(pre.unsupported)} node(s) of {ctx.onnx_path.name} cannot be built by TensorRT "
                f"{pre.toolkit_version} for {ctx.target.name}", pre.to_dict())
        onnx_name = "model.int8.onnx" if ctx.precision == "int8" else "model.onnx"
        cfg = engine_config(ctx, onnx_name)  # validates the build options before any quantization
        result = RecipeResult(primary_artifact="", runtime=ctx.target.runtime, runtime_device="cuda")
        if ctx.precision == "int8":
            outcome = quantize_for_target(ctx, ctx.out_dir / onnx_name, backend="ort", trt_compatible=True)
            result.calibration, result.evaluation = outcome.calibration, outcome.evaluation
            result.gate = outcome.int8_gate(_qdq_parity(ctx, ctx.out_dir / onnx_name))
            pre = check_tensorrt_ops(ctx.out_dir / onnx_name, table, dla=dla)  # what TensorRT will parse
            if not pre.ok and not allow:
                raise PreflightFailedError(
                    f"the quantized model has {len(pre.unsupported)} node(s) TensorRT {pre.toolkit_version} rejects",
                    pre.to_dict())
        else:
            copy_onnx(ctx.onnx_path, ctx.out_dir / onnx_name)
        (ctx.out_dir / "engine_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        script = ctx.out_dir / "build_engine.sh"
        script.write_text(_build_script(cfg))
        script.chmod(0o755)
        shutil.copyfile(TEMPLATES / "build_engine.py", ctx.out_dir / "build_engine.py")
        (ctx.out_dir / "build_engine.py").chmod(0o755)
        preflight = pre.to_dict()
        (ctx.out_dir / "README.txt").write_text(_readme(cfg, preflight, ctx, ctx.out_dir / onnx_name))
        result.primary_artifact = onnx_name
        result.preflight = preflight
        result.notes.append(
            f"TensorRT engines are not portable across devices or TensorRT versions; build on the device "
            f"with TensorRT {cfg['tensorrt_version']} ({cfg['platform']}): bash build_engine.sh"
        )
        if pre.fallback:
            result.notes.append(f"{len(pre.fallback)} node(s) fall back from the DLA to the GPU (see preflight.fallback)")
        if not pre.ok:
            result.notes.append(f"{len(pre.unsupported)} node(s) are unsupported; the engine build will fail")
        result.manifest_extra = {
            "engine": cfg["engine"],
            "engine_built": False,
            "build_commands": ["bash build_engine.sh", "python3 build_engine.py"],
            "trtexec": trtexec_args(cfg),
            "tensorrt_expected": cfg["tensorrt_version"],
            "dla_core": cfg["dla_core"],
        }
        if ctx.build_engine:
            self._build_here(ctx, result)
        result.files = sorted(p.relative_to(ctx.out_dir).as_posix() for p in ctx.out_dir.rglob("*") if p.is_file())
        return result

    def _build_here(self, ctx: CompileContext, result: RecipeResult) -> None:
        """Build the engine on this machine with the bundle's own build_engine.py."""
        import_optional("tensorrt", what="--build-engine")
        engine = "model.engine"
        proc = subprocess.run(
            [sys.executable, str(ctx.out_dir / "build_engine.py"), "--output", str(ctx.out_dir / engine),
             "--timing-cache", str(ctx.work_dir / "timing.cache")],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise MedgeError(f"TensorRT engine build failed: {tail}")
        result.primary_artifact = engine
        result.manifest_extra.update({"engine": engine, "engine_built": True})
