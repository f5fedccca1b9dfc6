"""Full-integer .tflite with a gate-driven fallback ladder, on ai-edge-quantizer (AEQ).

The float .tflite (BatchNorms folded or turned into depthwise convs by `fold`) is
calibrated once; every attempt is a per-op AEQ recipe over the same calibration statistics:

1. every op static int8 (a8w8, per-channel weights, int8 inputs and outputs);
2. the tensors whose int8 quantization adds the most error move to 16-bit activations (a16w8,
   LiteRT's int16x8 mode), with the op that writes each and the ops that read it: the worst 1, 4
   ... tensors, then all of them (the whole model in int16x8, int16 I/O included);
3. then the worst go to float (FP16 on the NPU; on the CPU if the delegate has no FP16).

For a CPU target (``prefer_float``: XNNPACK, which runs int16x8 ops slowly, slower than the float
model), the float rungs of step 3 (int8 everywhere else) come first; steps 2 and 3 follow only when
none of them passes (a tensor written by an input op cannot go to float without float I/O).

A .tflite that LiteRT rejects at allocation or invoke (a kernel refusing its quantized inputs: an
int8 DIV whose divisor rounds to the zero point) is a failed rung of its own, reported with the
kernel's message; the op it names goes to int16 (with the ops writing its inputs), and if refused
again to float, on that rung and every later one, and the ladder goes on.
Every tensor's calibration range is its min/max over all samples (`AeqLadder._calibrate`).

The climb is `medge.quantize.ladder.climb`, with these rungs as `AeqSteps`: it stops at the first
attempt that passes the gate (`Attempt.passed`, decided by the caller's `judge`).  Tensors are ranked by the error their own int8 quantization adds: per channel,
``‖DQ(Q(t)) − t‖ / ‖t − mean(t)‖`` of the float model's tensor ``t`` (over a few calibration
samples and all positions) with the int8 scale/zero point AEQ chose, averaged over channels, so
error inherited from upstream does not count.
Ops next to the model's inputs and outputs go to float only on the last rung (outputs only), so
the I/O stays integer (int16 when such an op is in int16) unless nothing else passes the gate.
Everything is deterministic: the same float model and calibration data give the same bytes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.common.errors import MedgeError, TargetError
from medge.common.fileio import atomic_path
from medge.common.registry import import_optional
from medge.quantize.ladder import Attempt, LadderSteps, Refused, Rung, Stage, climb

RANK_SAMPLES = 8
INT16_STEPS = 3
FLOAT_STEPS = 3


def _interpreter(model: bytes | Path, preserve: bool = False, allocate: bool = True) -> Any:
    mod = import_optional("ai_edge_litert.interpreter", what="LiteRT quantization")
    kwargs = {"model_path": str(model)} if isinstance(model, Path) else {"model_content": bytes(model)}
    interp = mod.Interpreter(experimental_op_resolver_type=mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                             experimental_preserve_all_tensors=preserve, **kwargs)
    if allocate:  # reading names, dtypes and quantization needs no allocation (a refused prepare would stop it)
        interp.allocate_tensors()
    return interp


def _signature(float_path: Path) -> tuple[str, list[str]]:
    """The signature key and its input names in the model's input order (the PyTorch arguments' order)."""
    interp = _interpreter(float_path)
    key = sorted(interp.get_signature_list())[0]
    by_index = {d["index"]: name for name, d in interp.get_signature_runner(key).get_input_details().items()}
    return key, [by_index[d["index"]] for d in interp.get_input_details()]


def _sample_arrays(sample: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One calibration sample as float32 arrays in input order (an array for a one-input model)."""
    arrays = [sample] if isinstance(sample, np.ndarray) else list(sample)
    return [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]


# Ops that move data without computing: their output carries their input's scale, so they add no
# error of their own, and moving them to int16/float only adds QUANTIZE ops around them.
DATA_MOVEMENT = frozenset({"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "QUANTIZE", "DEQUANTIZE", "GATHER",
                           "SLICE", "STRIDED_SLICE", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "CONCATENATION"})


# Ops with a quantized weight (or a constant matmul operand) whose parameters depend on the kernel.
WEIGHTED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"})


def ladder_candidates(float_path: Path) -> list[str]:
    """Output tensor names (AEQ's op scopes) of the ops the ladder may move, in execution order.

    Data-movement ops are left out, and so are the ops that read a model input or write a model
    output in the float step's sense: they stay integer so that the .tflite keeps int8 I/O.
    """
    interp = _interpreter(float_path)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return [names[int(op["outputs"][0])] for op in interp._get_ops_details()
            if len(op["outputs"]) and op["op_name"] not in DATA_MOVEMENT]


def _graph(float_path: Path) -> tuple[list[dict[str, Any]], dict[int, str], set[int], set[int]]:
    interp = _interpreter(float_path)
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    inputs = {d["index"] for d in interp.get_input_details()}
    outputs = {d["index"] for d in interp.get_output_details()}
    return interp._get_ops_details(), names, inputs, outputs


def io_ops(float_path: Path) -> tuple[set[str], set[str]]:
    """Scopes of the ops that consume a model input, and of those that produce a model output
    (through data-movement ops)."""
    ops, names, edge, outputs = _graph(float_path)
    boundary: set[str] = set()
    reading: set[str] = set()
    for op in ops:  # forward from the inputs through data movement to the first compute op
        if edge & {int(i) for i in op["inputs"]}:
            if op["op_name"] in DATA_MOVEMENT:
                edge |= {int(o) for o in op["outputs"]}
            else:
                boundary.add(names[int(op["outputs"][0])])
    reading, boundary = boundary, set()
    edge = set(outputs)
    for op in reversed(ops):  # backward from the outputs
        if edge & {int(o) for o in op["outputs"]}:
            if op["op_name"] in DATA_MOVEMENT:
                edge |= {int(i) for i in op["inputs"] if int(i) >= 0}
            else:
                boundary.add(names[int(op["outputs"][0])])
    return reading, boundary


def downstream(float_path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """For each op scope, what reads its output: (the compute ops reached through data-movement
    ops, and those data-movement ops themselves).

    A tensor only keeps its higher precision when its readers take it in that precision too, so
    the ladder moves an op together with its compute readers.  The data-movement ops between them
    go to int16 with the op: left in int8, every TRANSPOSE/RESHAPE between two int16 ops (a 1-D
    conv lowers to TRANSPOSE, RESHAPE, CONV_2D, RESHAPE, TRANSPOSE) requantizes the tensor to 8
    bits and back, and the whole-model int16 rung keeps most of the int8 error (ecg-3to12: 30 int8
    data-movement ops among 28 int16 ops).
    """
    ops, names, _, _ = _graph(float_path)
    readers: dict[int, list[dict[str, Any]]] = {}
    for op in ops:
        for i in op["inputs"]:
            readers.setdefault(int(i), []).append(op)

    def walk(tensor: int, seen: set[int], compute: list[str], movers: list[str]) -> None:
        for op in readers.get(tensor, []):
            out = int(op["outputs"][0])
            if op["op_name"] not in DATA_MOVEMENT:
                compute.append(names[out])
            elif out not in seen:
                seen.add(out)
                movers.append(names[out])
                walk(out, seen, compute, movers)

    compute_readers: dict[str, list[str]] = {}
    data_movers: dict[str, list[str]] = {}
    for op in ops:
        if len(op["outputs"]) and op["op_name"] not in DATA_MOVEMENT:
            name = names[int(op["outputs"][0])]
            compute_readers[name], data_movers[name] = [], []
            walk(int(op["outputs"][0]), set(), compute_readers[name], data_movers[name])
    return compute_readers, data_movers


def shared_constant_ops(float_path: Path) -> set[str]:
    """Scopes of the ops that read a constant tensor another op reads too.

    AEQ gives a shared constant one quantization: us-dct-vit's DCT basis is the constant lhs of a
    BATCH_MATMUL and the weight of a FULLY_CONNECTED, got per-channel parameters on axis 1 from
    the first and could not be loaded by the second (FULLY_CONNECTED needs axis 0).  Per-tensor
    weights for those ops give the one shared tensor parameters both kernels take.
    """
    interp = _interpreter(float_path)
    ops, names, inputs, _ = _graph(float_path)
    ranks = {t["index"]: len(t["shape"]) for t in interp.get_tensor_details()}
    produced = {int(o) for op in ops for o in op["outputs"]}
    readers: dict[int, set[str]] = {}
    for op in ops:
        if op["op_name"] not in WEIGHTED or not len(op["outputs"]):
            continue
        for i in {int(i) for i in op["inputs"]}:
            if i >= 0 and i not in produced and i not in inputs and ranks.get(i, 0) >= 2:
                readers.setdefault(i, set()).add(names[int(op["outputs"][0])])
    return {scope for users in readers.values() if len(users) > 1 for scope in users}


def aeq_quantizable(op_type: str) -> bool:
    """Whether ai-edge-quantizer has an integer recipe for this TFLite op type (e.g. not EXP, LOG, CUMSUM)."""
    qtyping = import_optional("ai_edge_quantizer.qtyping", what="LiteRT INT8 quantization")
    names = qtyping.TFLOperationName
    return op_type in names.__members__ and op_type not in ("ALL_SUPPORTED", "INPUT", "OUTPUT", "CUSTOM_OP")


def _scope(name: str) -> str:
    """AEQ's regex for the op whose (first) output tensor is `name`: its scope is "out1;out2;…;"."""
    return f"^{re.escape(name)};"


class AeqLadder:
    """Calibrate a float .tflite once, then quantize it with per-op precision recipes."""

    def __init__(self, float_path: Path, calibration: Sequence[np.ndarray | Sequence[np.ndarray]]) -> None:
        """`calibration`: model-ready samples in the .tflite's layout, an array each (one input)
        or a sequence of arrays in input order (several inputs, e.g. an image and a click)."""
        self.aeq = import_optional("ai_edge_quantizer", what="LiteRT INT8 quantization")
        self.float_path = float_path
        self.shared_ops = shared_constant_ops(float_path)
        self.signature, self.input_names = _signature(float_path)
        self.samples = [_sample_arrays(c) for c in calibration]
        if any(len(s) != len(self.input_names) for s in self.samples):
            raise TargetError(f"the float .tflite has {len(self.input_names)} input(s) but a calibration sample has "
                              f"{len(self.samples[0])}; every input needs calibration data")
        self.qsvs = self._calibrate()
        self.op_names = ladder_candidates(float_path)
        self.input_ops, self.output_ops = io_ops(float_path)
        self.io_ops = self.input_ops | self.output_ops
        self.readers, self.paths = downstream(float_path)

    def _calibrate(self) -> dict[str, Any]:
        """Every tensor's min/max over all calibration samples.

        AEQ's `Quantizer.calibrate` keeps an exponential moving average (factor 0.95) of each
        sample's min and max.  For a tensor with few values per sample (a pooled feature vector,
        a classifier's logit) the average of per-sample min and max converges to the typical
        value, not the range: us-frame-screen's logit got [-0.22, 0.22] for values in
        [-3.3, 5.4], clipping 90 % of them in int8 and int16 alike.  The running min/max
        (`min_max_update`, what PT2E's and ORT's MinMax observers do) keeps the whole range.
        """
        from ai_edge_quantizer import calibrator, recipe_manager
        from ai_edge_quantizer.utils import qsv_utils

        recipes = recipe_manager.RecipeManager()
        recipes.load_quantization_recipe(self._quantizer(set(), set()).get_quantization_recipe())
        calib = calibrator.Calibrator(self.float_path.read_bytes(), num_threads=1,
                                      qsv_update_func=qsv_utils.min_max_update)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
            calib.calibrate({self.signature: [dict(zip(self.input_names, s)) for s in self.samples]}, recipes)
        return calib.get_model_qsvs()

    def _quantizer(self, int16: set[str], floats: set[str]) -> Any:
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        aeq = self.aeq
        ops = aeq.qtyping.TFLOperationName.ALL_SUPPORTED
        tensorwise = aeq.qtyping.QuantGranularity.TENSORWISE
        quantizer = aeq.Quantizer(str(self.float_path))
        quantizer.add_static_config(".*", ops, 8, 8)
        for name in sorted(int16 | self.shared_ops):
            granularity = {"weight_granularity": tensorwise} if name in self.shared_ops else {}
            quantizer.add_static_config(_scope(name), ops, 16 if name in int16 else 8, 8, **granularity)
        for name in sorted(floats):
            quantizer.update_quantization_recipe(_scope(name), ops, algorithm_key=AlgorithmName.NO_QUANTIZE)
        return quantizer

    def quantize(self, output: Path, int16: Sequence[str] = (), floats: Sequence[str] = ()) -> None:
        """Write the .tflite with `int16` ops at a16w8, `floats` ops unquantized, the rest a8w8."""
        quantizer = self._quantizer(set(int16), set(floats))
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # tqdm bars
                result = quantizer.quantize(self.qsvs, enable_progress_report=False)
        except Exception as exc:  # noqa: BLE001 - AEQ raises ValueError/RuntimeError/KeyError on unsupported graphs
            raise TargetError(f"ai-edge-quantizer could not quantize the model: {' '.join(str(exc).split())[:300]}") from exc
        with atomic_path(output) as tmp:
            tmp.write_bytes(bytes(result.quantized_model))

    def rank(self, quantized: Path) -> list[tuple[str, float]]:
        """Ops of `quantized` with int8 outputs, worst first, by the error their output quantization adds."""
        q_interp = _interpreter(quantized, allocate=False)  # may be a .tflite LiteRT refused
        scales = {}
        for t in q_interp.get_tensor_details():
            scale, zero_point = t.get("quantization", (0.0, 0))
            if scale and np.dtype(t["dtype"]) == np.int8:
                scales[t["name"]] = (float(scale), int(zero_point))
        f_interp = _interpreter(self.float_path, preserve=True)
        by_name = {t["name"]: t["index"] for t in f_interp.get_tensor_details()}
        input_indices = [d["index"] for d in f_interp.get_input_details()]
        names = [n for n in self.op_names if n in scales and n in by_name]
        values: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for sample in self.samples[:RANK_SAMPLES]:
            for index, array in zip(input_indices, sample):
                f_interp.set_tensor(index, array)
            f_interp.invoke()
            for name in names:
                t = np.asarray(f_interp.get_tensor(by_name[name]), dtype=np.float64)
                values[name].append(t.reshape(-1, t.shape[-1]) if t.ndim else t.reshape(1, 1))
        errors: dict[str, list[float]] = {}
        for name in names:
            t = np.concatenate(values[name])
            t = np.where(np.isfinite(t), t, 0.0)  # a masked score (-inf) has no int8 value to rank
            scale, zp = scales[name]
            noise = (np.clip(np.round(t / scale) + zp, -128, 127) - zp) * scale - t
            # per channel (last axis: NHWC / NLC / features), against the channel's variation over
            # samples and positions, averaged: a channel the tensor-wide scale wipes out, or an
            # output whose values vary little (e.g. probabilities near 1/256 steps), ranks high
            spread = np.linalg.norm(t - t.mean(axis=0), axis=0)
            ratio = np.linalg.norm(noise, axis=0)[spread > 0] / spread[spread > 0]
            errors[name] = [float(ratio.mean())] if ratio.size else []
        ranked = [(n, float(np.mean(v))) for n, v in errors.items() if v]
        return sorted(ranked, key=lambda item: (-item[1], item[0]))


_REFUSED = re.compile(r"Node number (\d+) \((\w+)\) failed to (invoke|prepare)")
MAX_REFUSALS = 32  # refused rungs in one ladder (each moves one op one step: int8 → int16 → float)
QDQ = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class Refusal:
    """LiteRT rejected a .tflite: the op its kernel refused (at allocation or invoke), if it named one."""

    message: str
    op_type: str | None = None  # e.g. DIV; None: the interpreter named no op of the model
    stage: str | None = None  # prepare (allocation) | invoke
    scope: str | None = None  # the refused op's scope in the float model (AEQ's recipe regex)
    dtype: str | None = None  # the refused op's output dtype in the rejected .tflite

    def describe(self) -> str:
        """One line: which kernel refused what, and LiteRT's own words."""
        what = (f"the {self.dtype} {self.op_type} kernel failed to {self.stage}" if self.op_type
                else "the interpreter rejected the model")
        return f"LiteRT refused it: {what} ({self.message[:160]})"


def _messages(error: BaseException) -> str:
    """An exception's message with those of its causes (a runtime wraps the interpreter's error)."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(" ".join(str(error).split()))
        error = error.__cause__ or error.__context__
    return " | ".join(parts)


def find_refusal(float_path: Path, quantized: Path, error: BaseException) -> Refusal | None:
    """What LiteRT refused in `quantized`, when `error` is the interpreter rejecting it at allocation
    ("Node number N (OP) failed to prepare", or any load failure) or at invoke ("Node number 4 (DIV)
    failed to invoke": an int8 DIV whose divisor rounded to its zero point); else None.

    The refused node is mapped to its op in the float model by its output tensor name, or, where
    AEQ renamed it, by its position among the compute ops (QUANTIZE/DEQUANTIZE left out)."""
    text = _messages(error)
    match = _REFUSED.search(text)
    if match is None:
        return Refusal(text) if "litert cannot load" in text else None
    message = text[:match.start()].rsplit(" | ", 1)[-1].strip()  # the kernel's own words, before the node
    refusal = Refusal(message or match.group(0), match.group(2), match.group(3))
    ops, names, dtypes = _plain_graph(quantized)
    index = int(match.group(1))
    if index >= len(ops) or ops[index]["op_name"] != refusal.op_type or not len(ops[index]["outputs"]):
        return refusal  # a delegate kernel: no op of the model to move
    out = int(ops[index]["outputs"][0])
    refusal.dtype = dtypes[out]
    f_ops, f_names, _, _ = _graph(float_path)
    scopes = [f_names[int(op["outputs"][0])] for op in f_ops if len(op["outputs"])]
    if names[out] in scopes:
        refusal.scope = names[out]
    else:
        position = sum(1 for op in ops[:index] if op["op_name"] not in QDQ)
        compute = [op for op in f_ops if op["op_name"] not in QDQ and len(op["outputs"])]
        if position < len(compute) and compute[position]["op_name"] == refusal.op_type:
            refusal.scope = f_names[int(compute[position]["outputs"][0])]
    return refusal


def _plain_graph(model: Path) -> tuple[list[dict[str, Any]], dict[int, str], dict[int, str]]:
    """Ops, tensor names and dtypes of a .tflite, read without allocating (it may be one LiteRT refused)."""
    interp = _interpreter(model, allocate=False)
    tensors = interp.get_tensor_details()
    return (interp._get_ops_details(), {t["index"]: t["name"] for t in tensors},
            {t["index"]: np.dtype(t["dtype"]).name for t in tensors})


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


class AeqSteps(LadderSteps):
    """The LiteRT ladder's steps: AEQ recipes for one float .tflite, judged by the caller's `judge`,
    with LiteRT kernel refusals escalating the refused op (int8 → int16 → float) on every later rung."""

    label = "litert ladder"

    def __init__(self, ladder: AeqLadder, output: Path, judge: Callable[[Path, Attempt], Attempt], *,
                 int16_steps: int, float_steps: int, prefer_float: bool) -> None:
        self.ladder, self.output, self.judge = ladder, output, judge
        self.int16_steps, self.float_steps, self.prefer_float = int16_steps, float_steps, prefer_float
        self.forced16: dict[str, list[str]] = {}  # refused int8 op → the ops that go to int16 with it
        self.forced_float: list[str] = []  # refused int16 ops: float on every later rung
        self.kinds: dict[str, str] = {}  # refused op → its op type (for the rung's action)
        self.refusals = 0

    def with_readers(self, names: list[str], allowed: Callable[[str], bool] = lambda _n: True) -> list[str]:
        """`names` with the compute ops that read them, in order, those `allowed`."""
        group: list[str] = []
        for name in names:
            for op in [name, *self.ladder.readers.get(name, [])]:
                if op not in group and allowed(op):
                    group.append(op)
        return group

    def in_int16(self, names: list[str]) -> list[str]:
        """`names` with their readers and the data-movement ops between them (see `downstream`)."""
        group = self.with_readers(names)
        return list(dict.fromkeys(group + [m for name in group for m in self.ladder.paths.get(name, [])]))

    def escalate(self, refusal: Refusal, int16: list[str], floats: list[str]) -> str | None:
        """Move the refused op one step up (int8 → int16 → float); the step taken, or None."""
        scope = refusal.scope
        if scope is None or scope in floats or self.refusals >= MAX_REFUSALS:
            return None
        self.kinds[scope] = refusal.op_type or "op"
        if scope in int16 or refusal.dtype == "int16":
            self.forced16.pop(scope, None)
            self.forced_float.append(scope)
            return "float"
        writers = [op for op, readers in self.ladder.readers.items() if scope in readers]
        self.forced16[scope] = self.in_int16([*writers, scope])
        return "int16"

    def run(self, rung: Rung, index: int) -> Attempt:
        """Quantize `rung` (with every refused op moved so far) into `output` and judge it."""
        floats = list(dict.fromkeys([*rung.floats, *self.forced_float]))
        int16 = [n for n in dict.fromkeys([*rung.int16, *(m for g in self.forced16.values() for m in g)])
                 if n not in floats]
        moved = "".join(f", refused {self.kinds[n]} to int16" for n in self.forced16) + "".join(
            f", refused {self.kinds[n]} to float" + (" (float outputs)" if n in self.ladder.output_ops else "")
            for n in self.forced_float)
        result = Attempt(index, rung.action + moved, fp32_nodes=list(floats), int16_tensors=list(int16))
        self.ladder.quantize(self.output, int16, floats)
        try:
            return self.judge(self.output, result)
        except (RuntimeError, ValueError, MedgeError) as exc:
            refusal = find_refusal(self.ladder.float_path, self.output, exc)
            if refusal is None:  # not LiteRT rejecting the .tflite: a fault the ladder cannot climb over
                raise TargetError(f"the quantized .tflite cannot run on LiteRT ({_messages(exc)[:200]}); "
                                  "try --precision fp16") from exc
            step = self.escalate(refusal, int16, floats)
            self.refusals += 1
            summary = refusal.describe() + (f"; the {refusal.op_type} goes to {step}" if step else "")
            result.passed = False
            result.gate = {**result.gate, "kind": "refused", "passed": False,  # with what the judge measured
                           "refused": dataclasses.asdict(refusal), "summary": summary}
            raise Refused(result, retry=step is not None) from exc  # nothing moved: the ladder goes on

    def stages(self, attempts: list[Attempt]) -> Iterator[Rung | Stage]:
        """(CPU: float rungs,) int16 rungs, output ops to float, float rungs, everything movable to float."""
        ladder = self.ladder
        ranked = [name for name, _ in ladder.rank(self.output)]
        movable = [n for n in ranked if n not in ladder.io_ops]  # float at the edge would mean float I/O
        int16: list[str] = []

        def to_float(label: str) -> Stage:
            """The worst 1, 4 … movable tensors to float (with their readers), the int16 rungs' tensors kept."""
            def rung(k: int) -> Rung:
                floats = self.with_readers(movable[:k], lambda op: op not in ladder.io_ops)
                return Rung(f"worst {k} tensor(s) to float{label}", [n for n in int16 if n not in floats], floats)
            return Stage(len(movable), rung, self.float_steps, growth=4, last_all=True)

        def widen(k: int) -> Rung:
            nonlocal int16
            int16 = self.in_int16(ranked[:k])
            return Rung(f"worst {k} tensor(s) to int16", int16)

        if self.prefer_float:
            yield to_float(" (CPU target: float before int16)")
        yield Stage(len(ranked), widen, self.int16_steps, growth=4, last_all=True)
        outputs = sorted(ladder.output_ops - ladder.input_ops)
        if outputs:
            # The ops writing the model outputs in float (e.g. a sigmoid whose saturated probabilities
            # collapse onto one 8/16-bit step and tie in the AUROC), the worst 4 tensors in int16;
            # the inputs stay integer.  Reported as float outputs.
            some16 = [n for n in self.in_int16(ranked[:4]) if n not in outputs]
            yield Rung("output ops to float (float outputs), worst 4 tensor(s) to int16", some16, outputs)
        yield to_float("")
        if outputs:  # last rung: everything that may move in float, outputs included
            last = self.with_readers(movable, lambda op: op not in ladder.input_ops) + outputs
            yield Rung("output ops to float (float outputs), all movable ops to float",
                       [n for n in int16 if n not in last], last)


def run_ladder(float_path: Path, output: Path, calibration: Sequence[Any],
               judge: Callable[[Path, Attempt], Attempt], *, progress: Callable[[str], None] = lambda _m: None,
               int16_steps: int = INT16_STEPS, float_steps: int = FLOAT_STEPS,
               prefer_float: bool = False) -> list[Attempt]:
    """Quantize `float_path` to `output`, climbing the ladder until `judge` passes an attempt.

    `prefer_float` (CPU targets) tries int8 with float fallbacks before any int16 rung.

    `judge(path, attempt)` fills in the attempt's gate and ``passed``.  A .tflite that LiteRT
    rejects while the judge loads or runs it (a kernel refusing its quantized inputs) is a failed
    rung of its own (gate kind ``refused``): the op it names moves from int8 to int16 (with the ops
    writing its inputs), then to float, for that rung and every later one, and the rung is tried
    again.  Returns every attempt; `output` holds the last one (the passing one, or the last tried
    when none passed).
    """
    steps = AeqSteps(AeqLadder(float_path, calibration), output, judge, int16_steps=int16_steps,
                     float_steps=float_steps, prefer_float=prefer_float)
    return climb(steps, Rung("all int8"), progress)
