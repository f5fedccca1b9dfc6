"""The fallback ladder, written once: the climb, with each backend's steps behind `LadderSteps`.

A quantized artifact that fails its gate climbs a ladder of rungs, each moving more of the model
to 16 bits or to float.  This module owns the climb (as NNCF's ``algorithm.py``), the backends own
the steps (``*_backend.py``):

* the climb (`climb`): the first rung, then the backend's stages in order; a stage tries the worst
  1, g, g² … of its ranked candidates (`step_sizes`: at most its step budget, g its growth
  factor); the ladder stops at the first rung that does not fail; a rung whose artifact the
  runtime refuses (`Refused`) is a failed rung of its own and, when the backend moved the refused
  op, is tried again; every attempt is recorded as one `Attempt` and reported in one progress line;
* the steps (`LadderSteps`): quantize and judge one rung (`LadderSteps.run`), and the stages that
  follow a failed first rung (`LadderSteps.stages`: whole-model schemes, ranking, which candidates
  and what each rung moves).

Backends: `medge.quantize.ladder_onnx` (ONNX Runtime / OpenVINO / INC, judged by the task metric
or by parity) and `medge.devices.recipes.litert.ladder` (ai-edge-quantizer recipes for a .tflite,
with LiteRT kernel refusals).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Attempt:
    """One rung of a fallback ladder: what it moved, and the verdict of the gate that judged it."""

    index: int
    #: what the rung did, in words (e.g. "worst 4 tensor(s) to int16")
    action: str
    #: nodes (ONNX) or ops (LiteRT, named by their output tensor) kept in float
    fp32_nodes: list[str] = field(default_factory=list)
    #: activation tensors (ONNX) or ops (LiteRT, by output tensor) at 16 bits, weights int8
    int16_tensors: list[str] = field(default_factory=list)
    #: the backend's whole-model scheme of this rung (None: its default), e.g. NNCF's "transformer"
    scheme: str | None = None
    #: the gate's verdict; None: nothing judged it
    passed: bool | None = None
    #: the judge's figures: ``kind`` (metric, parity, refused), ``summary`` (one line) and its own keys
    gate: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        """passed, failed or not judged."""
        return "passed" if self.passed else "failed" if self.passed is False else "not judged"


@dataclass
class Rung:
    """What one rung asks the backend to quantize: the names to move to 16 bits and to float."""

    action: str
    int16: list[str] = field(default_factory=list)
    floats: list[str] = field(default_factory=list)
    scheme: str | None = None


@dataclass
class Stage:
    """Rungs over the worst k of `count` ranked candidates, k from `step_sizes`; `rung(k)` makes each."""

    count: int
    rung: Callable[[int], Rung]
    budget: int
    growth: int = 2
    #: the last rung always takes all `count` candidates (else the stage ends where the budget does)
    last_all: bool = False


class Refused(Exception):
    """The runtime rejected a rung's artifact.  `attempt` records it as a failed rung; `retry`: the
    backend moved the refused op, so the same rung is quantized and judged again."""

    def __init__(self, attempt: Attempt, retry: bool) -> None:
        super().__init__(attempt.gate.get("summary", "refused"))
        self.attempt, self.retry = attempt, retry


class LadderSteps(ABC):
    """A backend's side of the fallback ladder."""

    #: the prefix of the progress lines (e.g. "litert ladder")
    label: str = "ladder"

    @abstractmethod
    def run(self, rung: Rung, index: int) -> Attempt:
        """Quantize and judge `rung` as attempt `index`; raise `Refused` when the runtime rejects it."""

    @abstractmethod
    def stages(self, attempts: list[Attempt]) -> Iterator[Rung | Stage]:
        """The rungs and stages after a failed first rung, in order.

        A generator, run lazily: it sees `attempts` (every rung so far) and what earlier stages'
        `Stage.rung` calls chose, so a stage can build on the last one (e.g. keep its 16-bit tensors).
        """


def step_sizes(n: int, budget: int, growth: int, *, last_all: bool = False) -> list[int]:
    """How many of `n` ranked candidates each rung of a stage moves: 1, growth, growth² …, at most
    `budget` rungs, ending at `n` if the budget reaches it; with `last_all` the last rung always
    takes all `n` (1, 4, 16, n for growth 4 and budget 4).  No candidates: no rung."""
    sizes, k = [], 1
    while k < n and len(sizes) < budget - int(last_all):
        sizes.append(k)
        k *= growth
    if n and (last_all or len(sizes) < budget):
        sizes.append(n)
    return sizes


def climb(steps: LadderSteps, first: Rung, progress: Callable[[str], None] = lambda _m: None) -> list[Attempt]:
    """Climb the ladder from `first` until a rung does not fail; returns every attempt, the last one
    being the passing one (or the last tried when none passed)."""
    attempts: list[Attempt] = []

    def attempt(rung: Rung) -> Attempt:
        while True:
            retry = False
            try:
                result = steps.run(rung, len(attempts))
            except Refused as refused:
                result, retry = refused.attempt, refused.retry
            attempts.append(result)
            progress(f"{steps.label} attempt {result.index} ({result.action}): {result.verdict()} "
                     f"{result.gate.get('summary', '')}".rstrip())
            if not retry:
                return result

    if attempt(first).passed is not False:
        return attempts
    for item in steps.stages(attempts):
        rungs = [item] if isinstance(item, Rung) else (
            item.rung(k) for k in step_sizes(item.count, item.budget, item.growth, last_all=item.last_all))
        for rung in rungs:
            if attempt(rung).passed is not False:
                return attempts
    return attempts
