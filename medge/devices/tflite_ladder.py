"""Full-integer .tflite with a gate-driven fallback ladder, on ai-edge-quantizer (AEQ).

The float .tflite (BatchNorms folded or turned into depthwise convs by `tflite_fold`) is
calibrated once; every attempt is a per-op AEQ recipe over the same calibration statistics:

1. every op static int8 (a8w8, per-channel weights, int8 inputs and outputs);
2. the ops that add the most error move to 16-bit activations (a16w8, LiteRT's int16x8 mode):
   the worst 1, 2, 4 ... ops, as the ORT ladder does;
3. then the worst ops run in float (FP16 on the NPU; on the CPU if the delegate has no FP16).

The ladder stops at the first attempt that passes the gate (`Attempt.passed`, decided by the
caller's `judge`).  Ops are ranked by the error their own int8 output quantization adds:
``‖DQ(Q(t)) − t‖ / ‖t‖`` of the float model's tensor ``t`` with the int8 scale/zero point AEQ
chose, averaged over a few calibration samples, so error inherited from upstream does not count.
Everything is deterministic: the same float model and calibration data give the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medge.errors import TargetError
from medge.fileio import atomic_path
from medge.registry import import_optional

RANK_SAMPLES = 4
INT16_STEPS = 3
FLOAT_STEPS = 3


@dataclass
class Attempt:
    """One rung of the ladder: which ops are int16 / float, what the delegate runs, the gate."""

    index: int
    action: str
    int16_ops: list[str] = field(default_factory=list)
    float_ops: list[str] = field(default_factory=list)
    op_precisions: dict[str, int] = field(default_factory=dict)
    coverage: float | None = None
    partitions: int | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    passed: bool = False
    preflight: dict[str, Any] = field(default_factory=dict, repr=False)  # of this attempt's .tflite
    ops: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The attempt without its op list and preflight (those go to the bundle's manifest)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("preflight", "ops")}


def _interpreter(model: bytes | Path, preserve: bool = False) -> Any:
    mod = import_optional("ai_edge_litert.interpreter", what="LiteRT quantization")
    kwargs = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": bytes(model)}
    interp = mod.Interpreter(experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                             experimental_preserve_all_tensors=preserve, **kwargs)
    interp.allocate_tensors()
    return interp


def _signature(float_path: Path) -> tuple[str, str]:
    sigs = _interpreter(float_path).get_signature_list()
    key = sorted(sigs)[0]
    return key, sigs[key]["inputs"][0]


def op_output_names(float_path: Path) -> list[str]:
    """The output tensor name of every op of the float .tflite, in execution order (AEQ's op scopes)."""
    interp = _interpreter(float_path)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return [names[int(op["outputs"][0])] for op in interp._get_ops_details() if len(op["outputs"])]


class AeqLadder:
    """Calibrate a float .tflite once, then quantize it with per-op precision recipes."""

    def __init__(self, float_path: Path, calibration: Sequence[np.ndarray]) -> None:
        self.aeq = import_optional("ai_edge_quantizer", what="LiteRT INT8 quantization")
        self.float_path = float_path
        self.signature, self.input_name = _signature(float_path)
        self.samples = [np.ascontiguousarray(c, dtype=np.float32) for c in calibration]
        quantizer = self._quantizer(set(), set())
        with contextlib.redirect_stdout(io.StringIO()):
            self.qsvs = quantizer.calibrate({self.signature: [{self.input_name: s} for s in self.samples]}, num_threads=1)
        self.op_names = op_output_names(float_path)

    def _quantizer(self, int16: set[str], floats: set[str]) -> Any:
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        aeq = self.aeq
        ops = aeq.qtyping.TFLOperationName.ALL_SUPPORTED
        quantizer = aeq.Quantizer(str(self.float_path))
        quantizer.add_static_config(".*", ops, 8, 8)
        for name in sorted(int16):
            quantizer.add_static_config(f"^{re.escape(name)}$", ops, 16, 8)
        for name in sorted(floats):
            quantizer.update_quantization_recipe(f"^{re.escape(name)}$", ops, algorithm_key=AlgorithmName.NO_QUANTIZE)
        return quantizer

    def quantize(self, output: Path, int16: Sequence[str] = (), floats: Sequence[str] = ()) -> None:
        """Write the .tflite with `int16` ops at a16w8, `floats` ops unquantized, the rest a8w8."""
        quantizer = self._quantizer(set(int16), set(floats))
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = quantizer.quantize(self.qsvs, enable_progress_report=False)
        except Exception as exc:  # noqa: BLE001 - AEQ raises ValueError/RuntimeError/KeyError on unsupported graphs
            raise TargetError(f"ai-edge-quantizer could not quantize the model: {' '.join(str(exc).split())[:300]}") from exc
        with atomic_path(output) as tmp:
            tmp.write_bytes(bytes(result.quantized_model))

    def rank(self, quantized: Path) -> list[tuple[str, float]]:
        """Ops of `quantized` with int8 outputs, worst first, by the error their output quantization adds."""
        q_interp = _interpreter(quantized)
        scales = {}
        for t in q_interp.get_tensor_details():
            scale, zero_point = t.get("quantization", (0.0, 0))
            if scale and np.dtype(t["dtype"]) == np.int8:
                scales[t["name"]] = (float(scale), int(zero_point))
        f_interp = _interpreter(self.float_path, preserve=True)
        by_name = {t["name"]: t["index"] for t in f_interp.get_tensor_details()}
        input_index = f_interp.get_input_details()[0]["index"]
        errors: dict[str, list[float]] = {n: [] for n in self.op_names if n in scales and n in by_name}
        for sample in self.samples[:RANK_SAMPLES]:
            f_interp.set_tensor(input_index, sample)
            f_interp.invoke()
            for name in errors:
                t = np.asarray(f_interp.get_tensor(by_name[name]), dtype=np.float64)
                scale, zp = scales[name]
                fq = (np.clip(np.round(t / scale) + zp, -128, 127) - zp) * scale
                errors[name].append(float(np.linalg.norm(fq - t) / (np.linalg.norm(t) + 1e-12)))
        ranked = [(n, float(np.mean(v))) for n, v in errors.items() if v]
        return sorted(ranked, key=lambda item: (-item[1], item[0]))


def _steps(n: int, budget: int) -> list[int]:
    sizes, k = [], 1
    while len(sizes) < budget and (not sizes or sizes[-1] < n):
        sizes.append(min(k, n))
        k *= 4
    return sizes


def op_precisions(ops: list[dict[str, Any]]) -> dict[str, int]:
    """How many compute ops of a .tflite run in int8, int16 and float (QUANTIZE/DEQUANTIZE not counted)."""
    counts = {"int8": 0, "int16": 0, "float": 0}
    for op in ops:
        if op["op"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        dtypes = set(op["output_dtypes"])
        kind = "float" if dtypes & {"float32", "float16"} else "int16" if "int16" in dtypes else "int8"
        counts[kind] += 1
    return counts


def run_ladder(float_path: Path, output: Path, calibration: Sequence[np.ndarray],
               judge: Callable[[Path, Attempt], Attempt], *, progress: Callable[[str], None] = lambda _m: None,
               int16_steps: int = INT16_STEPS, float_steps: int = FLOAT_STEPS) -> list[Attempt]:
    """Quantize `float_path` to `output`, climbing the ladder until `judge` passes an attempt.

    `judge(path, attempt)` fills in the attempt's gate, coverage and ``passed``.  Returns every
    attempt; `output` holds the last one (the passing one, or the last tried when none passed).
    """
    ladder = AeqLadder(float_path, calibration)
    attempts: list[Attempt] = []

    def attempt(action: str, int16: list[str], floats: list[str]) -> Attempt:
        ladder.quantize(output, int16, floats)
        result = judge(output, Attempt(len(attempts), action, list(int16), list(floats)))
        attempts.append(result)
        progress(f"litert ladder attempt {result.index} ({action}): "
                 f"{'passed' if result.passed else 'failed'} {result.gate.get('summary', '')}")
        return result

    if attempt("all int8", [], []).passed:
        return attempts
    ranked = [name for name, _ in ladder.rank(output)]
    for k in _steps(len(ranked), int16_steps):
        if attempt(f"worst {k} op(s) to int16", ranked[:k], []).passed:
            return attempts
    int16 = ranked[: _steps(len(ranked), int16_steps)[-1]] if ranked else []
    for k in _steps(len(ranked), float_steps):
        floats = ranked[:k]
        if attempt(f"worst {k} op(s) to float", [n for n in int16 if n not in floats], floats).passed:
            return attempts
    return attempts
