"""Prune → distil → gate, at a given sparsity or the largest one that passes (``--sparsity auto``).

Data (`build_sets`): the distillation stream (fresh synthetic samples, or an augmented folder),
a *selection* set for early stopping and a *gate* set for the decision, all disjoint by sample
hash.  A finite source is split: 20 % gate (when no ``--eval`` is given), 15 % selection, the
rest trains.  Unlabelled sets are labelled by the dense teacher.

Schedule (`prune_and_distil`): the sparsity is reached in ``prune_steps`` equal steps of the kept
width; every step is followed by a distillation of ``steps / prune_steps`` optimizer steps.

Gate (`gate_student`): the drop is measured with its paired-bootstrap CI; while the CI half-width
is above a third of the budget and the gate data are unlimited (synthetic), more gate samples are
drawn (up to `Sets.eval_cap`) and the gate set grows for every later probe; a fixed set that
stays too small is reported as deciding within noise.

Search (`search_sparsity`, `medge.prune.search`): bisection over [min, max] sparsity.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field, replace
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from medge.common.errors import DataError
from medge.prune.distill import DistillConfig, DistillResult, distil
from medge.prune.distill_data import DistillStream
from medge.evaluate.gate import GateResult
from medge.evaluate.metrics import FIDELITY, higher_is_better, task_metric
from medge.evaluate.statistics import samples_for_precision
from medge.prune.gate import gate, teacher_targets
from medge.calibration import load_data, set_sha256
from medge.prune.methods import prune_structured_checked

GATE_SHARE, SELECT_SHARE = 0.2, 0.15
MAX_EVAL_SAMPLES = 8000  # cap of a grown gate set
MAX_EVAL_BYTES = 1 << 30  # ... and of its inputs in memory


@dataclass
class EvalSet:
    """Model-ready inputs with targets (from the data or the teacher) and the teacher's outputs."""

    inputs: np.ndarray
    targets: np.ndarray
    teacher: np.ndarray
    labels_from: str
    sha256: str
    keys: list[str] = field(default_factory=list)


@dataclass
class Sets:
    """Everything the recovery trains and decides on."""

    stream: DistillStream | None  # None: no distillation (gate only)
    select: EvalSet | None
    gate: EvalSet
    metric: str
    labelled_stream: bool
    grow: Callable[[int], EvalSet] | None = None  # draws more gate samples (unlimited synthetic data only)
    eval_cap: int = 0  # most gate samples `grow` may reach
    notes: list[str] = field(default_factory=list)


@dataclass
class Trial:
    """One pruned-and-distilled student and its gate result."""

    sparsity: float
    student: nn.Module
    structured: Any
    distillation: list[DistillResult]
    gate: GateResult
    seconds: float
    widths: list[int] = field(default_factory=list)  # output widths of the Conv/Linear layers reached

    def summary(self) -> dict[str, Any]:
        """JSON summary (no module)."""
        return {"sparsity": self.sparsity, "widths": self.widths, "gate": self.gate.to_dict("pruned"),
                "seconds": round(self.seconds, 3), "distill_steps": sum(d.steps for d in self.distillation),
                "stopped": [d.stopped for d in self.distillation],
                "best_step": [d.best_step for d in self.distillation]}


@dataclass
class Plan:
    """How to prune and recover."""

    sparsity: float | None  # None: search
    prune_steps: int = 1
    max_drop: float | None = None
    min_sparsity: float = 0.1
    max_sparsity: float = 0.8
    resolution: float = 0.05
    time_budget: float | None = None  # seconds for the whole search
    round_to: int | None = None
    distill: DistillConfig = field(default_factory=DistillConfig)
    ci_rule: bool = False  # pass only when the drop's whole CI is within max_drop (--sparsity auto)
    scale_time_budget: bool = False  # the default budget: grown to fit every probe at the first one's pace
    step_down_to: float | None = None  # when min_sparsity fails: halve it down to this floor before giving up


def predict(module: nn.Module, inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Primary output of `module` (eval, no grad) on `inputs`, stacked."""
    module.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            out = module(torch.from_numpy(inputs[start:start + batch_size]))
            out = out[0] if isinstance(out, (tuple, list)) else out
            chunks.append(out.float().numpy())
    return np.concatenate(chunks)


def _eval_set(dataset_inputs: np.ndarray, targets: np.ndarray | None, keys: list[str], teacher: nn.Module,
              task: str, metric: str) -> EvalSet:
    t_out = predict(teacher, dataset_inputs)
    if targets is None or metric == FIDELITY:
        return EvalSet(dataset_inputs, teacher_targets(task, metric, t_out), t_out, "teacher", set_sha256(keys),
                       list(keys))
    return EvalSet(dataset_inputs, np.asarray(targets, dtype=np.float32), t_out, "data", set_sha256(keys),
                   list(keys))


def build_sets(loaded, teacher: nn.Module, *, source: str | None, eval_source: str | None, metric: str,
               eval_samples: int, select_samples: int, seed: int) -> Sets:
    """Load the distillation stream and the disjoint selection and gate sets (see module docstring)."""
    sets = _build_sets(loaded, teacher, source=source, eval_source=eval_source, metric=metric,
                       eval_samples=eval_samples, select_samples=select_samples, seed=seed)
    gate_source = eval_source or source
    if gate_source and gate_source.split(":", 1)[0] == "synthetic":
        per_sample = max(1, sets.gate.inputs[:1].nbytes)
        sets.eval_cap = max(len(sets.gate.inputs), min(MAX_EVAL_SAMPLES, MAX_EVAL_BYTES // per_sample))
        sets.grow = _grower(loaded, teacher, sets, gate_source, metric, seed)
    return sets


def _grower(loaded, teacher: nn.Module, sets: Sets, source: str, metric: str, seed: int) -> Callable[[int], EvalSet]:
    """`grow(k)`: `k` more synthetic gate samples, disjoint from every set drawn so far."""
    draws = iter(range(1, 1 << 20))

    def grow(k: int) -> EvalSet:
        data = load_data(source, loaded.meta, input_name=loaded.input_names[0], input_shape=loaded.input_shape,
                         n=k, split="eval", seed=seed + 1000 * next(draws))
        stream_exclude = sets.stream.exclude if sets.stream is not None else set()
        samples = [x for x in data.samples if x.key not in stream_exclude]
        stream_exclude.update(x.key for x in samples)  # never trained on from now on
        return _from_samples(samples, loaded, teacher, loaded.meta.task, metric)
    return grow


def _build_sets(loaded, teacher: nn.Module, *, source: str | None, eval_source: str | None, metric: str,
                eval_samples: int, select_samples: int, seed: int) -> Sets:
    def load(src: str, n: int, split: str, s: int):
        return load_data(src, loaded.meta, input_name=loaded.input_names[0], input_shape=loaded.input_shape,
                         n=n, split=split, seed=s)

    task = loaded.meta.task
    gate_data = load(eval_source, eval_samples, "eval", seed) if eval_source else None
    if source is None:
        if gate_data is None:
            raise DataError("nothing to evaluate on: pass --eval SOURCE or --finetune SOURCE")
        return Sets(None, None, _from_samples(gate_data.samples, loaded, teacher, task, metric), metric, False)
    synthetic = source.split(":", 1)[0] == "synthetic"
    exclude = {s.key for s in gate_data.samples} if gate_data else set()
    if synthetic:
        if gate_data is None:
            gate_data = load(source, eval_samples, "eval", seed)
            exclude = {s.key for s in gate_data.samples}
        select_data = load(source, select_samples, "eval", seed + 1)
        sel = [s for s in select_data.samples if s.key not in exclude]
        exclude |= {s.key for s in sel}
        select = _from_samples(sel, loaded, teacher, task, metric)
        stream = DistillStream(source, loaded.meta, input_name=loaded.input_names[0],
                               input_shape=loaded.input_shape, seed=seed, exclude=exclude)
        return Sets(stream, select, _from_samples(gate_data.samples, loaded, teacher, task, metric), metric,
                    labelled_stream=select_data.targets() is not None and metric != FIDELITY)
    everything = load(source, 100_000, "calib", seed)
    samples = [s for s in everything.samples if s.key not in exclude]
    order = np.random.default_rng([seed, 0x73706C]).permutation(len(samples))
    samples = [samples[i] for i in order]
    n_gate = 0 if gate_data is not None else max(8, round(GATE_SHARE * len(samples)))
    n_select = max(4, round(SELECT_SHARE * len(samples)))
    if len(samples) - n_gate - n_select < 4:
        raise DataError(f"'{source}' has {len(samples)} usable samples: too few to hold out {n_gate} for the gate, "
                        f"{n_select} for early stopping and still train; give at least 20 images or a separate --eval")
    gate_samples = gate_data.samples if gate_data is not None else samples[:n_gate]
    select_samples_ = samples[n_gate:n_gate + n_select]
    train = samples[n_gate + n_select:]
    name = loaded.input_names[0]
    stream = DistillStream(source, loaded.meta, input_name=name, input_shape=loaded.input_shape, seed=seed,
                           base_inputs=np.concatenate([s.feeds[name] for s in train]),
                           base_keys=[s.key for s in train])
    return Sets(stream, _from_samples(select_samples_, loaded, teacher, task, metric),
                _from_samples(gate_samples, loaded, teacher, task, metric), metric, labelled_stream=False)


def as_fidelity(sets: Sets) -> Sets:
    """The same sets gated on fidelity: the teacher's outputs become the targets, and the stream's labels
    stay out of the distillation loss."""
    def relabel(part: EvalSet | None) -> EvalSet | None:
        return None if part is None else replace(part, targets=part.teacher.astype(np.float32), labels_from="teacher")

    return replace(sets, select=relabel(sets.select), gate=relabel(sets.gate), metric=FIDELITY, labelled_stream=False)


def _from_samples(samples, loaded, teacher, task: str, metric: str) -> EvalSet:
    if not samples:
        raise DataError("no evaluation samples left once the distillation data are excluded; give more data")
    name = loaded.input_names[0]
    x = np.concatenate([s.feeds[name] for s in samples])
    targets = None if any(s.target is None for s in samples) else np.stack([np.asarray(s.target) for s in samples])
    return _eval_set(x, targets, [s.key for s in samples], teacher, task, metric)


def step_ratios(sparsity: float, steps: int) -> list[float]:
    """Per-step pruning ratios (of the current width) that reach `sparsity` of the dense width."""
    kept = [1.0 - sparsity * i / steps for i in range(steps + 1)]
    return [1.0 - kept[i] / kept[i - 1] for i in range(1, steps + 1)]


def prune_and_distil(dense: nn.Module, sparsity: float, plan: Plan, sets: Sets, example: torch.Tensor,
                     task_loss, label: str = "") -> Trial:
    """Copy `dense`, prune it to `sparsity` in `plan.prune_steps` steps with distillation after each."""
    started = time.perf_counter()
    student = copy.deepcopy(dense)
    teacher = dense
    metric = sets.metric
    hib = higher_is_better(metric)

    def select(module: nn.Module) -> float:
        return task_metric(metric, predict(module, sets.select.inputs), sets.select.targets)

    teacher_select = task_metric(metric, sets.select.teacher, sets.select.targets)
    per_step = max(1, plan.distill.steps // plan.prune_steps)
    results: list[DistillResult] = []
    structured = None
    ratios = step_ratios(sparsity, plan.prune_steps)
    for i, ratio in enumerate(ratios, start=1):
        result = prune_structured_checked(student, example, ratio, plan.round_to, "the model")
        if structured is None:
            structured = result
        else:
            structured.narrowed_layers = max(structured.narrowed_layers, result.narrowed_layers)
        # no "reached the teacher" stop: on a selection set of ~64 samples it fired on noise
        # (selection at the teacher's level, gate 0.01 below); patience-based stopping remains
        cfg = replace(plan.distill, steps=per_step, seed=plan.distill.seed + i)
        tag = f"{label}s={sparsity:.2f} step {i}/{len(ratios)}" if len(ratios) > 1 else f"{label}s={sparsity:.2f}"
        results.append(distil(student, teacher, sets.stream, cfg, task_loss=task_loss if sets.labelled_stream else None,
                              select=select, teacher_score=teacher_select, higher_is_better=hib, label=tag))
    decision = gate_student(student, sets, plan.max_drop, ci_rule=plan.ci_rule)
    return Trial(sparsity, student, structured, results, decision, time.perf_counter() - started,
                 layer_widths(student))


def layer_widths(module: nn.Module) -> list[int]:
    """Output widths (channels / features) of every Conv and Linear layer, in module order."""
    return [int(m.weight.shape[0]) for m in module.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and getattr(m, "weight", None) is not None]


def gate_student(student: nn.Module, sets: Sets, max_drop: float | None, *, ci_rule: bool = False) -> GateResult:
    """Gate `student` on `sets.gate`; while the CI is too wide to decide against `max_drop` (half-width
    above a third of it) and `sets.grow` can draw more, the gate set grows (it stays grown)."""
    out = predict(student, sets.gate.inputs)
    decision = gate(sets.metric, sets.gate.teacher, out, sets.gate.targets, max_drop, sets.gate.labels_from,
                    ci_rule=ci_rule)
    while max_drop is not None and not decision.precise and sets.grow is not None \
            and len(sets.gate.inputs) < sets.eval_cap:
        n = len(sets.gate.inputs)
        want = min(sets.eval_cap, samples_for_precision(n, decision.ci95, max_drop))
        if want <= n:
            break
        extra = sets.grow(want - n)
        sets.notes.append(f"gate set grown from {n} to {n + len(extra.inputs)} samples: the CI half-width "
                          f"{decision.ci_half_width:.4g} was above a third of the budget {max_drop:g}")
        sets.gate = _concat(sets.gate, extra)
        out = np.concatenate([out, predict(student, extra.inputs)])
        decision = gate(sets.metric, sets.gate.teacher, out, sets.gate.targets, max_drop, sets.gate.labels_from,
                        ci_rule=ci_rule)
    return decision


def _concat(a: EvalSet, b: EvalSet) -> EvalSet:
    keys = a.keys + b.keys
    return EvalSet(np.concatenate([a.inputs, b.inputs]), np.concatenate([a.targets, b.targets]),
                   np.concatenate([a.teacher, b.teacher]), a.labels_from, set_sha256(keys), keys)
