"""``--sparsity auto``: the largest sparsity in [min, max] whose pruned and distilled student passes the gate.

Bisection to `Plan.resolution`, each probe pruned from the dense model, distilled and gated with
the CI rule (`medge.evaluate.gate`: the whole CI of the drop within the budget; a CI that
straddles it is a failed probe "within noise").  A probe whose pruned widths equal an earlier
probe's (channel rounding maps nearby sparsities onto one architecture) is skipped and takes that
probe's verdict.  The search stops when the interval is resolved or the time budget is spent; with
`Plan.scale_time_budget` the budget grows to fit the expected probes at the first probe's pace.
When the lowest sparsity fails and `Plan.step_down_to` is set (the default range), the search halves
it down to that floor; the first that passes becomes the low end of the bisection.
Every probe is reported (sparsity, widths, steps, metric with CI, time), with a progress line per
probe and an ETA for the whole search; when nothing passes, the error names the best probe and
the flag most likely to help.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from typing import Any

import torch
from torch import nn

from medge.common.errors import GateFailedError
from medge.prune.recover import Plan, Sets, Trial, layer_widths, prune_and_distil
from medge.prune.methods import prune_structured_checked


def max_probes(plan: Plan) -> int:
    """Probes a full bisection takes: the two ends, then one per halving down to the resolution."""
    span = plan.max_sparsity - plan.min_sparsity
    halvings = math.ceil(math.log2(span / plan.resolution) - 1e-9) if span > plan.resolution else 0
    return 2 + max(halvings, 0)


def _say(text: str) -> None:
    """One search line on stderr (printed with --no-progress too: it is the search's account, not a bar)."""
    print(f"medge: prune auto: {text}", file=sys.stderr, flush=True)


def _widths_at(dense: nn.Module, sparsity: float, plan: Plan, example: torch.Tensor) -> list[int]:
    probe = copy.deepcopy(dense)
    prune_structured_checked(probe, example, sparsity, plan.round_to, "the model")
    return layer_widths(probe)


def _line(trial: Trial, dense_width: int) -> str:
    g = trial.gate
    kept = sum(trial.widths)
    steps = sum(d.steps for d in trial.distillation)
    return (f"sparsity {trial.sparsity:.2f}: {kept}/{dense_width} channels kept, {steps} distillation steps, "
            f"{g.describe()}: {g.verdict} ({trial.seconds:.0f} s)")


def search_sparsity(dense: nn.Module, plan: Plan, sets: Sets, example: torch.Tensor, task_loss,
                    model: str) -> tuple[Trial, list[dict[str, Any]]]:
    """Largest sparsity in [min, max] (to `plan.resolution`) whose pruned student passes the gate.

    Returns the chosen trial and one JSON record per probe.  Raises `GateFailedError` when the
    smallest sparsity (after stepping down to `plan.step_down_to`) already fails (nothing is written then).
    """
    started = time.perf_counter()
    total = max_probes(plan)
    extra = [0]  # step-down probes, counted into the plan once they are needed
    dense_width = sum(layer_widths(dense))
    probes: list[dict[str, Any]] = []
    tried: list[Trial] = []
    budget = [plan.time_budget]

    def elapsed() -> float:
        return time.perf_counter() - started

    def eta() -> str:
        if not tried:
            return "ETA after the first probe"
        left = (total + extra[0] - len(probes)) * sum(t.seconds for t in tried) / len(tried)
        if budget[0] is not None:
            left = min(left, max(budget[0] - elapsed(), 0.0))
        return f"ETA {left:.0f} s"

    def probe(s: float) -> Trial:
        s = round(s, 4)
        widths = _widths_at(dense, s, plan, example)
        same = next((t for t in tried if t.widths == widths), None)
        if same is not None:
            probes.append({"sparsity": s, "widths": widths, "skipped": f"same widths as sparsity {same.sparsity:g}",
                           "passed": same.gate.passed})
            _say(f"sparsity {s:.2f} skipped: same widths as {same.sparsity:.2f} ({same.gate.verdict})")
            return same
        _say(f"probe {len(probes) + 1}/{total + extra[0]} at sparsity {s:.2f}; search {elapsed():.0f} s, {eta()}")
        trial = prune_and_distil(dense, s, plan, sets, example, task_loss, label="auto ")
        tried.append(trial)
        probes.append(trial.summary())
        if plan.scale_time_budget and budget[0] is not None and len(tried) == 1:
            budget[0] = max(budget[0], trial.seconds * total * 1.1)
        _say(f"{_line(trial, dense_width)}; search {elapsed():.0f} s, {eta()}")
        return trial

    def over_budget() -> bool:
        return budget[0] is not None and elapsed() > budget[0]

    low = probe(plan.min_sparsity)
    lo, hi = plan.min_sparsity, plan.max_sparsity
    failed = low
    while not low.gate.passed and plan.step_down_to is not None and lo / 2 >= plan.step_down_to - 1e-9:
        failed, hi, lo = low, lo, round(lo / 2, 4)
        extra[0] += 1
        _say(f"sparsity {hi:.2f} fails; stepping down to {lo:.2f} (the default range reaches down to "
             f"{plan.step_down_to:g})")
        low = probe(lo)
    if not low.gate.passed:
        raise GateFailedError(_nothing_passes(model, low if low.gate.drop <= failed.gate.drop else failed, sets))
    best = low
    if hi == plan.max_sparsity:
        top = None if over_budget() else probe(hi)
        if top is not None and top.gate.passed:
            return _done(top, probes, budget[0], elapsed())
    while hi - lo > plan.resolution + 1e-9 and not over_budget():
        mid = round((lo + hi) / 2, 4)
        trial = probe(mid)
        if trial.gate.passed:
            best, lo = trial, mid
        else:
            hi = mid
    if over_budget():
        probes.append({"note": f"time budget of {budget[0]:.0f} s spent; best passing sparsity kept"})
    return _done(best, probes, budget[0], elapsed())


def _done(best: Trial, probes: list[dict[str, Any]], budget: float | None, seconds: float) -> tuple[Trial, list[dict[str, Any]]]:
    if budget is not None:
        probes.append({"time_budget_s": round(budget, 1), "search_seconds": round(seconds, 1)})
    _say(f"chose sparsity {best.sparsity:.2f} after {seconds:.0f} s")
    return best, probes


def _nothing_passes(model: str, best: Trial, sets: Sets) -> str:
    g = best.gate
    steps = sum(d.steps for d in best.distillation)
    if g.within_noise:
        why = f"its CI straddles --max-drop {g.max_drop:g}: within noise"
    else:
        why = f"it drops by {g.drop:.4g} > --max-drop {g.max_drop:g}"
    return (f"no sparsity passes the gate for '{model}': the best probe, sparsity {best.sparsity:g} after {steps} "
            f"distillation steps, has {g.describe()}; {why}; nothing was written - {_hint(best, sets)}")


def _hint(best: Trial, sets: Sets) -> str:
    """The flag most likely to help a search where even the lowest sparsity failed."""
    g = best.gate
    if g.within_noise and not g.precise and sets.grow is None:
        return ("the evaluation set is too small to decide (CI half-width above a third of the budget): give a "
                "larger --eval set, or a lower --min-sparsity")
    still_learning = any(d.stopped == "time-budget" or (d.best_step and d.best_step >= d.steps - d.steps // 10)
                         for d in best.distillation)
    steps = sum(d.planned_steps for d in best.distillation)
    if still_learning:
        return (f"distillation was still improving at its last steps: try --distill-steps {2 * steps} "
                f"(and a larger --prune-time-budget / --time-budget), or a lower --min-sparsity")
    return (f"try a lower --min-sparsity (e.g. {max(0.05, round(best.sparsity / 2, 2)):g}), "
            f"or more --distill-steps (e.g. {2 * steps})")
