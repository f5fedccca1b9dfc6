"""`medge prune`: structured or unstructured pruning of a PyTorch model, recovered by distillation.

With ``--finetune SOURCE`` the pruned student is distilled from the dense FP32 teacher
(`medge.prune.distill`); with ``--max-drop`` (or ``--sparsity auto``) it must pass the clinical
gate against the teacher (`medge.prune.gate`), and ``--sparsity auto`` bisects for the
largest sparsity that passes (`medge.prune.recover`).  A failed gate writes nothing.

The pruned model is saved as an ExportedProgram (``OUT.pt2``, the architecture changed, so a
state dict alone would not load) plus a metadata sidecar ``OUT.pt2.medge.json`` holding the
`ModelMeta` keys (task, labels, input layout, preprocessing, ...), so that
``medge export OUT.pt2 -o model.onnx`` produces a normal medge ONNX file.

Sidecar format (JSON object, keys of `medge.common.metadata.ModelMeta`)::

    {"model": "us-frame-screen", "task": "classification", "labels": [...],
     "input_layout": "NCHW", "preprocessing": {...}, "source_sha256": "<sha256 of OUT.pt2>",
     "medge_version": "0.1.0", "output_names": ["probabilities"],
     "extra": {"input_names": ["image"], "input_shape": [1, 1, 128, 128], "dynamic_batch": true,
               "pruning": {"mode": ..., "sparsity": ..., "search": "fixed" | "auto", "source_model": ...,
                           "source_sha256": ..., "teacher_sha256": ..., "round_to": ..., "prune_steps": ...,
                           "distillation": {"source", "data_sha256", "steps", "samples", "seconds"} | null,
                           "metric": {"name", "before", "after", "drop", "ci95", "max_drop", "passed",
                                      "labels_from", "eval_sha256"} | null}}}
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from medge.common.errors import GateFailedError, MedgeError, ParityError, UsageError
from medge.common.metadata import sidecar_path
from medge.common.reports import Report
from medge.common.fileio import sha256_file, write_json_atomic
from medge.export import load_model
from medge.export.loading import state_dict_sha256

MODES = ("structured", "unstructured")
MAX_STRUCTURED_SPARSITY = 0.95
ONNX_OPSET_FOR_SIZE = 17
_PARITY_ATOL = 1e-4
SYNTHETIC_EVAL_SAMPLES = 2000  # first draw of the gate set; grown until its CI can decide (prune_recover)
DEFAULT_TIME_BUDGET = 1300.0  # --sparsity auto without --time-budget: grown to fit the probes (prune_search)
# --sparsity auto without --min-sparsity starts at 0.5; when that fails (a narrow model, e.g. us-xlstm-unet's
# 16-32-64 channels, left with 8), it halves down to the floor before giving up.
DEFAULT_MIN_SPARSITY = 0.5
STEP_DOWN_FLOOR = 0.25
# Defaults from what bench/bench_prune.py showed works on the zoo (issue 28): 600 steps run to the end
# (patience 1000: the best EMA state on a 1000-sample selection set is kept), the label loss alone
# when the data have labels, the search over [0.5, 0.7].


class PruneError(MedgeError):
    """The model cannot be pruned as asked."""


class ChannelPruningError(PruneError):
    """Structured (channel) pruning cannot handle this architecture's graph; unstructured pruning can.
    `reason` is the message without the fix, which differs between ``medge prune`` and ``medge build``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; use --mode unstructured")
        self.reason = reason


@dataclass
class PruneConfig:
    """Everything `prune_model` needs; mirrors the ``medge prune`` flags."""

    model: str
    output: str
    sparsity: float | None = 0.5  # None: search the largest that passes the gate (--sparsity auto)
    mode: str = "structured"
    weights: str | None = None
    model_kwargs: dict[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    task: str | None = None  # non-zoo models: task/labels stored in the metadata
    labels: list[str] | None = None
    finetune: str | None = None  # distillation data
    distill_steps: int = 600
    lr: float = 1e-3
    lr_schedule: str = "onecycle"
    batch_size: int = 16
    eval_every: int = 25
    patience: int = 1000
    task_weight: float = 1.0
    ema: float = 0.99
    prune_steps: int = 1
    eval: str | None = None
    eval_samples: int | None = None  # None: SYNTHETIC_EVAL_SAMPLES from a synthetic source, else 200
    select_samples: int = 1000
    metric: str | None = None
    max_drop: float | None = None
    min_sparsity: float | None = None  # None: DEFAULT_MIN_SPARSITY, stepping down to STEP_DOWN_FLOOR when it fails
    max_sparsity: float = 0.7
    resolution: float = 0.05
    time_budget: float | None = None  # --sparsity auto: None is DEFAULT_TIME_BUDGET, scaled with the model
    round_to: int | None = None
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    progress: bool = True
    measure_onnx: bool = True


@dataclass
class PruneReport(Report):
    """Result of ``medge prune`` (JSON keys are a stable contract)."""

    title: ClassVar[str] = "prune"
    model: str = ""
    mode: str = ""
    sparsity: float = 0.0
    search: str = "fixed"  # or "auto"
    params: dict[str, int] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    reduction: dict[str, float] = field(default_factory=dict)  # fraction removed: params, macs
    zero_fraction: float | None = None  # unstructured: zeros among the pruned weights
    zero_fraction_all_params: float | None = None
    metric: dict[str, Any] | None = None  # name, before, after, [after_pruning_before_distillation], source, samples
    gate: dict[str, Any] | None = None  # GateResult.to_dict("pruned")
    distillation: dict[str, Any] | None = None  # data, runs (one per prune step), seconds
    probes: list[dict[str, Any]] = field(default_factory=list)  # --sparsity auto: every sparsity tried
    settings: dict[str, Any] = field(default_factory=dict)  # the distillation/search settings used
    onnx_size_bytes: dict[str, int] | None = None
    speedup_note: str = ""
    output: str = ""
    sidecar: str = ""
    sha256: str = ""
    teacher_sha256: str = ""
    weights_sha256: str = ""  # of the pruned state dict (the .pt2 archive itself is not byte-reproducible)
    dynamic_batch: bool = False
    parity: dict[str, float] = field(default_factory=dict)  # saved .pt2 vs in-memory pruned model
    kept_layers: dict[str, list[str]] = field(default_factory=dict)
    narrowed_layers: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def min_sparsity(config: PruneConfig) -> float:
    """The lowest sparsity `--sparsity auto` tries first: --min-sparsity, else the default."""
    return DEFAULT_MIN_SPARSITY if config.min_sparsity is None else config.min_sparsity


def step_down_floor(config: PruneConfig) -> float | None:
    """How far `--sparsity auto` halves a failing lowest sparsity: only in the default range."""
    return STEP_DOWN_FLOOR if config.min_sparsity is None else None


def validate_config(config: PruneConfig) -> None:
    """Reject bad requests before any model is built (raises `UsageError`)."""
    if config.mode not in MODES:
        raise UsageError(f"unknown pruning mode '{config.mode}'; choices: {', '.join(MODES)}")
    upper = MAX_STRUCTURED_SPARSITY if config.mode == "structured" else 0.999
    if config.sparsity is None:
        if config.mode != "structured":
            raise UsageError("--sparsity auto needs --mode structured: unstructured zeros bring no speed-up to search for")
        if not config.finetune:
            raise UsageError("--sparsity auto needs --finetune SOURCE: every probed sparsity is distilled before "
                             "it is gated (e.g. --finetune synthetic:cxr)")
        if not 0.0 < min_sparsity(config) < config.max_sparsity <= upper:
            raise UsageError(f"need 0 < --min-sparsity < --max-sparsity <= {upper:g} "
                             f"(got {min_sparsity(config):g}, {config.max_sparsity:g})")
    elif not 0.0 < config.sparsity <= upper:
        raise UsageError(f"--sparsity must be in (0, {upper:g}] or 'auto' for {config.mode} pruning (got "
                         f"{config.sparsity:g}); e.g. --sparsity 0.5 removes half of the channels/weights")
    if Path(config.output).suffix != ".pt2":
        raise UsageError(f"output '{config.output}' must end in .pt2: the pruned model is saved as an ExportedProgram "
                         "that 'medge export' accepts")
    if config.finetune:
        from medge.prune.distill import DistillConfig

        DistillConfig(steps=config.distill_steps, batch_size=config.batch_size, lr=config.lr,
                      schedule=config.lr_schedule, eval_every=config.eval_every, patience=config.patience,
                      task_weight=config.task_weight, ema=config.ema).validate()
    if config.prune_steps < 1:
        raise UsageError(f"--prune-steps must be >= 1 (got {config.prune_steps})")
    if config.prune_steps > 1 and not config.finetune:
        raise UsageError("--prune-steps > 1 distils after every step: pass --finetune SOURCE")
    if config.round_to is not None and config.round_to < 1:
        raise UsageError(f"--round-to must be >= 1 (got {config.round_to})")
    if config.threads is not None and config.threads < 1:
        raise UsageError(f"--threads must be >= 1 (got {config.threads})")
    if config.time_budget is not None and not config.time_budget > 0:
        raise UsageError(f"--time-budget must be > 0 seconds (got {config.time_budget:g})")
    if config.max_drop is not None and not (config.eval or config.finetune):
        raise UsageError("--max-drop needs --eval SOURCE (or --finetune SOURCE, whose held-out part is the gate set)")
    if config.metric and config.metric != "fidelity":
        from medge.evaluate.metrics import check_metric_name

        check_metric_name(config.metric)


def _gate_sets(config: PruneConfig, report: PruneReport, loaded, teacher, metric: str):
    """The distillation, selection and gate sets; when the data's targets do not fit the model's output
    (an encoder's embedding is no mask) and no --metric was asked for, the gate is fidelity instead."""
    from medge.evaluate.metrics import FIDELITY, targets_fit
    from medge.prune.recover import as_fidelity, build_sets

    sets = build_sets(loaded, teacher, source=config.finetune, eval_source=config.eval, metric=metric,
                      eval_samples=_eval_samples(config), select_samples=config.select_samples, seed=config.seed)
    outputs, targets = sets.gate.teacher.shape[1:], sets.gate.targets.shape[1:]
    if metric == FIDELITY or config.metric or targets_fit(outputs, targets):
        return sets
    report.notes.append(f"the data's {metric} targets {tuple(targets)} do not fit this model's output "
                        f"{tuple(outputs)}: the gate is fidelity (R² against the dense model's outputs)")
    return as_fidelity(sets)


def _load(config: PruneConfig):
    loaded = load_model(config.model, config.weights, config.model_kwargs, config.input_shape)
    if loaded.kind in ("exported-program", "torchscript"):
        raise UsageError(f"cannot prune '{config.model}' ({loaded.kind}): pruning needs the PyTorch module; "
                         "give a zoo name or package.module:factory with --weights")
    if len(loaded.input_names) > 1:
        raise UsageError(f"cannot prune '{config.model}': it takes {len(loaded.input_names)} inputs "
                         f"({', '.join(loaded.input_names)}) and pruning traces, distils and gates single-input models "
                         "only; prune a single-input part on its own (e.g. a factory that returns its encoder)")
    if config.task or config.labels:
        if loaded.kind == "zoo":
            raise UsageError("--task/--labels are for non-zoo models; zoo models carry them in their card")
        loaded.meta.task = config.task or loaded.meta.task
        loaded.meta.labels = list(config.labels or loaded.meta.labels)
    if not loaded.meta.preprocessing and len(loaded.input_shape) == 4:
        loaded.meta.preprocessing = _unit_image_preprocessing(loaded.input_shape)
    return loaded


def _unit_image_preprocessing(shape: tuple[int, ...]) -> dict[str, Any]:
    """Preprocessing for a non-zoo NCHW image model: images scaled to [0, 1], resized, not normalised."""
    channels = int(shape[1])
    return {"kind": "image", "modality": "OT", "channels": channels, "height": int(shape[2]), "width": int(shape[3]),
            "layout": "NCHW", "intensity": "unit", "window_center": None, "window_width": None,
            "mean": [0.0] * channels, "std": [1.0] * channels}


def _complexity(module, input_shape) -> tuple[int, int]:
    from medge.zoo.complexity import count_macs, count_params

    return count_params(module), count_macs(module, input_shape)


def _onnx_size(module, example, notes: list[str], what: str) -> int | None:
    """Size of a TorchScript-exported (opset 17) ONNX file of `module`, or None if it cannot export."""
    import torch

    with tempfile.TemporaryDirectory(prefix="medge-prune-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET_FOR_SIZE)
        except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
            notes.append(f"ONNX size of the {what} model not measured: {type(exc).__name__}: {str(exc)[:160]}")
            return None
        return path.stat().st_size


def _prune(config: PruneConfig, module, example) -> tuple[Any, list[Any]]:
    """Apply the pruning; returns the structured result and, for unstructured, the masked weights."""
    from medge.prune.methods import (
        apply_unstructured_masks,
        output_layers,
        prunable_weights,
        prune_structured_checked,
    )

    if config.mode == "structured":
        return prune_structured_checked(module, example, config.sparsity, config.round_to, config.model), []
    params = prunable_weights(module, exclude=output_layers(module, example))
    if not params:
        raise PruneError(f"'{config.model}' has no Conv/Linear weights to prune besides its output layers")
    apply_unstructured_masks(params, config.sparsity)
    return None, params


def _check_shapes(reference, pruned, example, model: str) -> None:
    import torch

    with torch.no_grad():
        try:
            ref, out = reference(example), pruned(example)
        except RuntimeError as exc:
            raise PruneError(f"structured pruning left '{model}' inconsistent ({str(exc).splitlines()[0][:160]}); "
                             "use --mode unstructured or a lower --sparsity") from None
    ref_shapes = [tuple(t.shape) for t in (ref if isinstance(ref, (tuple, list)) else [ref])]
    out_shapes = [tuple(t.shape) for t in (out if isinstance(out, (tuple, list)) else [out])]
    if ref_shapes != out_shapes:
        raise PruneError(f"structured pruning changed the output shapes of '{model}' ({ref_shapes} -> {out_shapes}); "
                         "use --mode unstructured")


def _export_program(module, input_shape: tuple[int, ...]):
    """ExportedProgram of `module` and whether its batch is dynamic (static when the model needs it)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    example = torch.randn((2, *input_shape[1:]))
    try:
        return torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), True
    except Exception:  # noqa: BLE001 - any export failure: retry with the static card shape
        pass
    try:
        return torch.export.export(module, (torch.randn(input_shape),)), False
    except Exception as exc:  # noqa: BLE001 - torch.export raises many error types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PruneError(f"the pruned model cannot be saved with torch.export ({type(exc).__name__}: {first[:160]}); "
                         "make the model torch.export-compatible") from None


def save_pruned(module, loaded, output: str | Path, pruning: dict[str, Any]) -> dict[str, Any]:
    """Save `module` as ``output`` (.pt2) + sidecar atomically; returns sha256, parity and batch mode."""
    import torch

    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    program, dynamic = _export_program(module, loaded.input_shape)
    example = torch.randn(loaded.input_shape, generator=torch.Generator().manual_seed(1))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # torch.export wants a file name ending in .pt2, so the temporary file lives in a private folder.
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.", dir=output.parent) as tmp_dir:
        tmp = Path(tmp_dir) / output.name
        torch.export.save(program, str(tmp))
        with torch.no_grad():
            saved = torch.export.load(str(tmp)).module()(example)
            reference = module(example)
        error = float((saved - reference).abs().max())
        if not error <= _PARITY_ATOL * max(1.0, float(reference.abs().max())):
            raise ParityError(f"the saved ExportedProgram differs from the pruned model by {error:.3g}; "
                              "report this as a medge bug")
        sha = sha256_file(tmp)
        meta = dataclasses.replace(loaded.meta, source_sha256=sha, output_names=list(loaded.output_names))
        meta.extra = {**meta.extra, "input_names": list(loaded.input_names),
                      "input_shape": [int(d) for d in loaded.input_shape], "dynamic_batch": dynamic,
                      "pruning": pruning}
        write_json_atomic(sidecar_path(output), dataclasses.asdict(meta))
        os.replace(tmp, output)
    return {"sha256": sha, "max_abs_error": error, "dynamic_batch": dynamic}


def _speedup_note(mode: str, macs_before: int, macs_after: int) -> str:
    if mode == "unstructured":
        return ("unstructured pruning only zeroes weights: every shape, the MAC count and the dense ONNX size stay "
                "the same, so CPU/GPU/NPU runtimes without sparse kernels run no faster; it helps compressed "
                "downloads or sparse kernels only")
    ratio = macs_before / macs_after if macs_after else float("inf")
    return (f"channels were removed: {ratio:.2f}x fewer MACs; the real speed-up depends on the runtime and "
            "target - measure it with 'medge profile'")


def _fill_complexity(report: PruneReport, reference, module, example, input_shape, measure_onnx: bool) -> None:
    params_before, macs_before = _complexity(reference, input_shape)
    params_after, macs_after = _complexity(module, input_shape)
    report.params = {"before": params_before, "after": params_after}
    report.macs = {"before": macs_before, "after": macs_after}
    report.reduction = {"params": 1.0 - params_after / max(params_before, 1),
                        "macs": 1.0 - macs_after / max(macs_before, 1)}
    report.speedup_note = _speedup_note(report.mode, macs_before, macs_after)
    if measure_onnx:
        before = _onnx_size(reference, example, report.notes, "original")
        after = _onnx_size(module, example, report.notes, "pruned")
        if before is not None and after is not None:
            report.onnx_size_bytes = {"before": before, "after": after}


def _task_loss(task: str):
    """The task loss used next to distillation when the data have labels (None for unknown tasks)."""
    from medge.prune.losses import LOSSES, task_loss

    name = LOSSES.get(task)
    return None if name is None else (lambda out, target: task_loss(name, out, target))


def _distill_config(config: PruneConfig):
    from medge.prune.distill import DistillConfig

    return DistillConfig(steps=config.distill_steps, batch_size=config.batch_size, lr=config.lr,
                         schedule=config.lr_schedule, task_weight=config.task_weight, eval_every=config.eval_every,
                         patience=config.patience, seed=config.seed, progress=config.progress, ema=config.ema)


def _recover(config: PruneConfig, report: PruneReport, loaded, teacher, example, sets):
    """Prune (and distil) a student from `teacher`; returns (student, gate result or None, distillation runs)."""
    from medge.prune.gate import gate
    from medge.prune.recover import Plan, gate_student, predict, prune_and_distil
    from medge.prune.search import search_sparsity

    if config.mode == "structured" and sets is not None and sets.stream is not None:
        auto = config.sparsity is None
        plan = Plan(sparsity=config.sparsity, prune_steps=config.prune_steps, max_drop=config.max_drop,
                    min_sparsity=min_sparsity(config), max_sparsity=config.max_sparsity, resolution=config.resolution,
                    step_down_to=step_down_floor(config),
                    time_budget=config.time_budget or (DEFAULT_TIME_BUDGET if auto else None),
                    round_to=config.round_to, distill=_distill_config(config), ci_rule=auto,
                    scale_time_budget=auto and config.time_budget is None)
        if config.sparsity is None:
            trial, report.probes = search_sparsity(teacher, plan, sets, example, _task_loss(loaded.meta.task),
                                                   config.model)
        else:
            if config.prune_steps == 1:  # what pruning alone costs, to show what distillation wins back
                bare = copy.deepcopy(teacher)
                _prune(config, bare, example)
                report.metric = {"after_pruning_before_distillation": gate(
                    sets.metric, sets.gate.teacher, predict(bare, sets.gate.inputs), sets.gate.targets, None,
                    sets.gate.labels_from).value}
            trial = prune_and_distil(teacher, config.sparsity, plan, sets, example, _task_loss(loaded.meta.task))
        report.sparsity = trial.sparsity
        if trial.structured is not None:
            report.kept_layers = {"output": trial.structured.output_layers, "token": trial.structured.token_layers}
            report.narrowed_layers = trial.structured.narrowed_layers
        return trial.student, trial.gate, trial.distillation
    student = copy.deepcopy(teacher)
    structured, masked = _prune(config, student, example)
    if structured is not None:
        report.kept_layers = {"output": structured.output_layers, "token": structured.token_layers}
        report.narrowed_layers = structured.narrowed_layers
    runs = []
    if sets is not None and sets.stream is not None:  # unstructured: the masks keep pruned weights at zero
        from medge.prune.distill import distil
        from medge.evaluate.metrics import higher_is_better, task_metric

        def select(module):
            return task_metric(sets.metric, predict(module, sets.select.inputs), sets.select.targets)

        report.metric = {"after_pruning_before_distillation": task_metric(
            sets.metric, predict(student, sets.gate.inputs), sets.gate.targets)}
        runs.append(distil(student, teacher, sets.stream, _distill_config(config),
                           task_loss=_task_loss(loaded.meta.task) if sets.labelled_stream else None, select=select,
                           teacher_score=task_metric(sets.metric, sets.select.teacher, sets.select.targets),
                           higher_is_better=higher_is_better(sets.metric)))
    if masked:
        from medge.prune.methods import remove_unstructured_masks

        zeros = remove_unstructured_masks(student, masked)
        report.zero_fraction, report.zero_fraction_all_params = zeros.zero_fraction, zeros.zero_fraction_all_params
    decision = None
    if sets is not None:
        decision = gate_student(student, sets, config.max_drop)
    return student, decision, runs


def _fill_metric(config: PruneConfig, report: PruneReport, decision, sets) -> None:
    if decision is None:
        return
    report.gate = decision.to_dict("pruned")
    report.metric = {"name": decision.metric, "before": decision.reference, "after": decision.value,
                     **(report.metric or {}), "source": config.eval or f"{config.finetune} (held out)",
                     "samples": decision.n, "labels_from": decision.labels_from, "eval_sha256": sets.gate.sha256}


def _settings(config: PruneConfig, sets) -> dict[str, Any]:
    """The distillation and search settings this run used (defaults included), for the report."""
    out: dict[str, Any] = {"distill_steps": config.distill_steps, "patience": config.patience,
                           "eval_every": config.eval_every, "ema": config.ema, "task_weight": config.task_weight,
                           "lr": config.lr, "batch_size": config.batch_size, "select_samples": config.select_samples,
                           "eval_samples": _eval_samples(config), "max_drop": config.max_drop}
    if sets is not None:
        out.update(eval_samples_used=len(sets.gate.inputs), eval_samples_cap=sets.eval_cap or len(sets.gate.inputs))
    if config.sparsity is None:
        out.update(min_sparsity=min_sparsity(config), max_sparsity=config.max_sparsity, resolution=config.resolution,
                   step_down_to=step_down_floor(config),
                   time_budget=config.time_budget if config.time_budget is not None else
                   f"{DEFAULT_TIME_BUDGET:g} s or more (fits the probes at the first one's pace)")
    return out


def _eval_samples(config: PruneConfig) -> int:
    """Gate samples: many from unlimited synthetic data (the paired drop's CI shrinks as 1/sqrt(n))."""
    if config.eval_samples is not None:
        return config.eval_samples
    source = config.eval or config.finetune or ""
    return SYNTHETIC_EVAL_SAMPLES if source.split(":", 1)[0] == "synthetic" else 200


def _pruning_record(config: PruneConfig, report: PruneReport, loaded) -> dict[str, Any]:
    distillation = None
    if report.distillation:
        data = report.distillation["data"]
        distillation = {"source": data["source"], "data_sha256": data["sha256"],
                        "steps": sum(r["steps"] for r in report.distillation["runs"]),
                        "samples": data["samples_drawn"], "seconds": report.distillation["seconds"]}
    metric = None
    if report.gate:
        metric = {k: report.gate[k] for k in ("name", "drop", "ci95", "max_drop", "passed", "labels_from")}
        metric.update(before=report.gate["reference"], after=report.gate["pruned"],
                      eval_sha256=(report.metric or {}).get("eval_sha256"))
    return {"mode": config.mode, "sparsity": report.sparsity, "search": report.search, "source_model": config.model,
            "source_sha256": loaded.sha256, "teacher_sha256": report.teacher_sha256,
            "weights_sha256": report.weights_sha256, "round_to": config.round_to,
            "prune_steps": config.prune_steps, "seed": config.seed, "finetune": config.finetune,
            "distillation": distillation, "metric": metric}


def prune_model(config: PruneConfig) -> PruneReport:
    """Prune `config.model`, distil and gate it when asked, and save it as a ``.pt2``.

    Raises a `MedgeError` subclass for bad requests and failed gates; nothing is written at
    ``config.output`` then.
    """
    validate_config(config)
    import torch

    from medge.evaluate.gate import DEFAULT_MAX_DROP
    from medge.prune.gate import metric_for

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    loaded = _load(config)
    metric = metric_for(loaded.meta.task, config.metric) if (config.eval or config.finetune) else None
    if config.max_drop is None and config.sparsity is None:
        config = dataclasses.replace(config, max_drop=DEFAULT_MAX_DROP.get(metric, 0.005))
    example = torch.randn(loaded.input_shape, generator=torch.Generator().manual_seed(config.seed))
    teacher = copy.deepcopy(loaded.module).eval()
    report = PruneReport(model=config.model, mode=config.mode, sparsity=config.sparsity or 0.0,
                         search="auto" if config.sparsity is None else "fixed",
                         teacher_sha256=state_dict_sha256(teacher))
    if config.mode == "structured":  # refuse graphs torch_pruning cannot handle before data are built
        from medge.prune.methods import prune_structured_checked

        prune_structured_checked(copy.deepcopy(teacher), example, config.sparsity or min_sparsity(config),
                                 config.round_to, config.model)
    sets = None
    if metric is not None:
        sets = _gate_sets(config, report, loaded, teacher, metric)
    t_distil = time.perf_counter()
    student, decision, runs = _recover(config, report, loaded, teacher, example, sets)
    if runs or report.probes:
        report.distillation = {"data": dataclasses.asdict(sets.stream.summary),
                               "runs": [dataclasses.asdict(r) for r in runs],
                               "seconds": round(time.perf_counter() - t_distil, 3)}
    _fill_metric(config, report, decision, sets)
    report.settings = _settings(config, sets)
    if decision is not None and decision.passed is False:
        raise GateFailedError(
            f"the pruned model fails its gate: {decision.metric} {decision.reference:.4f} -> {decision.value:.4f}, "
            f"{decision.describe()} > --max-drop {decision.max_drop:g}; nothing was written to {config.output} - "
            "lower --sparsity, use --sparsity auto, or distil longer (--distill-steps, --prune-steps)", report)
    _check_shapes(teacher, student, example, config.model)
    _fill_complexity(report, teacher, student, example, loaded.input_shape, config.measure_onnx)
    report.weights_sha256 = state_dict_sha256(student)
    saved = save_pruned(student, loaded, config.output, _pruning_record(config, report, loaded))
    report.output, report.sidecar = str(config.output), str(sidecar_path(config.output))
    report.sha256, report.dynamic_batch = saved["sha256"], saved["dynamic_batch"]
    report.parity = {"max_abs_error": saved["max_abs_error"], "atol": _PARITY_ATOL}
    if not report.dynamic_batch:
        report.notes.append("torch.export could not make the batch dynamic: the .pt2 takes batch "
                            f"{loaded.input_shape[0]} only")
    if loaded.meta.task == "unknown":
        report.notes.append("no task/labels known for this model: the sidecar carries task 'unknown' "
                            "(pass --task/--labels to store them)")
    if sets is not None and sets.stream is not None:
        report.notes.extend(sets.stream.summary.notes)
    if sets is not None:
        report.notes.extend(sets.notes)
    note = decision.precision_note() if decision is not None else None
    if note:
        report.notes.append(note)
    report.seconds = round(time.perf_counter() - started, 3)
    return report
