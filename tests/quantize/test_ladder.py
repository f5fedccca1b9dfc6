"""The fallback ladder's climb (`medge.quantize.ladder`) with a tiny real backend on ONNX Runtime.

The backend here quantizes a three-node ONNX graph by putting a Q/DQ pair (a per-tensor scale from
the calibration maximum) after each node, int8 or int16 per rung, none for the nodes kept in float,
and judges the result by its largest error against the float graph.  Node ``b`` writes one channel
of ±500 beside channels of ±0.5, which one int8 scale rounds to zero: the gate fails until ``b``
leaves int8.  At opset 13, ONNX Runtime refuses an int16 Q/DQ pair (int16 needs opset 21): the
backend turns that refusal into a failed rung, moves the node to float and the rung is tried again.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from onnx import TensorProto, helper

from medge.common.errors import ModelLoadError
from medge.quantize.ladder import Attempt, LadderSteps, Refused, Rung, Stage, climb, step_sizes
from medge.runtimes.ort import ort_session

NODES = ("a", "b", "c")
WEIGHTS = {"a": [2.0] * 4, "b": [1000.0, 1.0, 1.0, 1.0], "c": [0.001, 1.0, 1.0, 1.0]}
TOLERANCE = 0.05


def _graph(opset: int, int16: set[str] = frozenset(), floats: set[str] = frozenset(),
           scales: dict[str, float] | None = None) -> bytes:
    """x → a → b → c → y (each a Mul by a constant); every node not in `floats` gets a Q/DQ pair."""
    nodes, inits, value = [], [], "x"
    for name in NODES:
        inits.append(helper.make_tensor(f"w_{name}", TensorProto.FLOAT, [4], WEIGHTS[name]))
        out = f"t_{name}"
        nodes.append(helper.make_node("Mul", [value, f"w_{name}"], [out], name=name))
        if scales is not None and name not in floats:
            dtype = TensorProto.INT16 if name in int16 else TensorProto.INT8
            qmax = 32767 if name in int16 else 127
            inits += [helper.make_tensor(f"s_{name}", TensorProto.FLOAT, [], [scales[name] / qmax]),
                      helper.make_tensor(f"z_{name}", dtype, [], [0])]
            nodes += [helper.make_node("QuantizeLinear", [out, f"s_{name}", f"z_{name}"], [f"q_{name}"]),
                      helper.make_node("DequantizeLinear", [f"q_{name}", f"s_{name}", f"z_{name}"], [f"dq_{name}"])]
            out = f"dq_{name}"
        value = out
    nodes.append(helper.make_node("Identity", [value], ["y"]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("y", *(f"t_{m}" for m in NODES))]
    graph = helper.make_graph(nodes, "ladder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              outputs if scales is None else outputs[:1], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


class QdqSteps(LadderSteps):
    """Q/DQ after each node on ONNX Runtime; judged by the largest error against the float graph."""

    label = "qdq ladder"

    def __init__(self, opset: int, tolerance: float = TOLERANCE) -> None:
        self.opset, self.tolerance = opset, tolerance
        self.samples = [np.random.default_rng(i).uniform(-0.5, 0.5, (1, 4)).astype(np.float32) for i in range(8)]
        session = ort_session(_graph(opset), optimize=False)
        runs = [session.run(None, {"x": x}) for x in self.samples]
        self.reference = [r[0] for r in runs]
        self.scales = {n: max(float(np.abs(r[1 + i]).max()) for r in runs) for i, n in enumerate(NODES)}
        self.forced_float: list[str] = []

    def error(self, int16: set[str] = frozenset(), floats: set[str] = frozenset()) -> float:
        session = ort_session(_graph(self.opset, int16, floats, self.scales), optimize=False, label="the Q/DQ graph")
        return max(float(np.abs(session.run(None, {"x": x})[0] - r).max()) for x, r in zip(self.samples, self.reference))

    def run(self, rung: Rung, index: int) -> Attempt:
        floats = list(dict.fromkeys([*rung.floats, *self.forced_float]))
        int16 = [n for n in rung.int16 if n not in floats]
        attempt = Attempt(index, rung.action, fp32_nodes=floats, int16_tensors=int16)
        try:
            error = self.error(set(int16), set(floats))
        except ModelLoadError as exc:  # the runtime refuses the int16 pairs: they go to float, and again
            self.forced_float += int16
            attempt.passed, attempt.gate = False, {"kind": "refused", "summary": str(exc)[:300]}
            raise Refused(attempt, retry=bool(int16)) from exc
        attempt.passed = error < self.tolerance
        attempt.gate = {"kind": "max_error", "error": error, "summary": f"max error {error:.3g}"}
        return attempt

    def stages(self, attempts: list[Attempt]) -> Iterator[Rung | Stage]:
        # rank by the error each node adds alone in int8
        ranked = sorted(NODES, key=lambda n: -self.error(floats=set(NODES) - {n}))
        yield Stage(len(ranked), lambda k: Rung(f"worst {k} to int16", int16=ranked[:k]), budget=2)
        yield Stage(len(ranked), lambda k: Rung(f"worst {k} to float", floats=ranked[:k]), budget=3)


@pytest.mark.parametrize("n, budget, growth, last_all, sizes", [
    (10, 3, 2, False, [1, 2, 4]), (3, 5, 2, False, [1, 2, 3]), (4, 5, 2, False, [1, 2, 4]), (0, 3, 2, False, []),
    (10, 3, 4, True, [1, 4, 10]), (10, 1, 4, True, [10]), (4, 3, 4, True, [1, 4]), (5, 0, 2, False, [])])
def test_step_sizes_grow_by_the_factor_within_the_budget(n, budget, growth, last_all, sizes):
    assert step_sizes(n, budget, growth, last_all=last_all) == sizes


def test_the_node_that_breaks_int8_goes_to_16_bits_and_the_climb_stops_there():
    lines: list[str] = []
    attempts = climb(QdqSteps(opset=21), Rung("all int8"), lines.append)
    assert [(a.action, a.passed) for a in attempts] == [("all int8", False), ("worst 1 to int16", True)]
    assert attempts[1].int16_tensors == ["b"] and attempts[1].fp32_nodes == []
    assert attempts[0].gate["error"] > 0.3 and attempts[1].gate["error"] < TOLERANCE
    assert lines[0].startswith("qdq ladder attempt 0 (all int8): failed max error ") and "passed" in lines[1]


def test_a_refused_rung_is_recorded_and_retried_with_the_refused_node_in_float():
    attempts = climb(QdqSteps(opset=13), Rung("all int8"))
    assert [(a.action, a.gate["kind"], a.passed) for a in attempts] == [
        ("all int8", "max_error", False), ("worst 1 to int16", "refused", False), ("worst 1 to int16", "max_error", True)]
    assert "int16" in attempts[1].gate["summary"] and attempts[2].fp32_nodes == ["b"] and not attempts[2].int16_tensors
    assert [a.index for a in attempts] == [0, 1, 2]


def test_every_rung_is_recorded_when_none_passes():
    attempts = climb(QdqSteps(opset=21, tolerance=1e-7), Rung("all int8"))  # only the float graph is exact
    assert [a.action for a in attempts] == ["all int8", "worst 1 to int16", "worst 2 to int16",
                                            "worst 1 to float", "worst 2 to float", "worst 3 to float"]
    assert [a.passed for a in attempts] == [False] * 5 + [True]
    assert attempts[2].int16_tensors[0] == attempts[3].fp32_nodes[0] == "b" and set(attempts[5].fp32_nodes) == set(NODES)
