"""`medge prune`: structured or unstructured pruning of a PyTorch model, with optional fine-tuning.

The pruned model is saved as an ExportedProgram (``OUT.pt2``, the architecture changed, so a
state dict alone would not load) plus a metadata sidecar ``OUT.pt2.medge.json`` holding the
`ModelMeta` keys (task, labels, input layout, preprocessing, ...), so that
``medge export OUT.pt2 -o model.onnx`` produces a normal medge ONNX file.

Sidecar format (JSON object, keys of `medge.metadata.ModelMeta`)::

    {"model": "us-frame-screen", "task": "classification", "labels": [...],
     "input_layout": "NCHW", "preprocessing": {...}, "source_sha256": "<sha256 of OUT.pt2>",
     "medge_version": "0.1.0", "output_names": ["probabilities"],
     "extra": {"input_names": ["image"], "input_shape": [1, 1, 128, 128], "dynamic_batch": true,
               "pruning": {"mode": ..., "sparsity": ..., "source_model": ..., "source_sha256": ...,
                           "finetune": <source or null>}}}
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

from medge.errors import MedgeError, ParityError, UsageError
from medge.metadata import sidecar_path
from medge.reports import Report

MODES = ("structured", "unstructured")
MAX_STRUCTURED_SPARSITY = 0.95
ONNX_OPSET_FOR_SIZE = 17
_PARITY_ATOL = 1e-4


class PruneError(MedgeError):
    """The model cannot be pruned as asked."""


@dataclass
class PruneConfig:
    """Everything `prune_model` needs; mirrors the ``medge prune`` flags."""

    model: str
    output: str
    sparsity: float = 0.5
    mode: str = "structured"
    weights: str | None = None
    model_kwargs: dict[str, Any] | None = None
    input_shape: tuple[int, ...] | None = None
    finetune: str | None = None
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 8
    finetune_samples: int = 128
    eval: str | None = None
    eval_samples: int = 100
    metric: str | None = None
    round_to: int | None = None
    seed: int = 0
    measure_onnx: bool = True


@dataclass
class PruneReport(Report):
    """Result of ``medge prune`` (JSON keys are a stable contract)."""

    title: ClassVar[str] = "prune"
    model: str = ""
    mode: str = ""
    sparsity: float = 0.0
    params: dict[str, int] = field(default_factory=dict)
    macs: dict[str, int] = field(default_factory=dict)
    reduction: dict[str, float] = field(default_factory=dict)  # fraction removed: params, macs
    zero_fraction: float | None = None  # unstructured: zeros among the pruned weights
    zero_fraction_all_params: float | None = None
    metric: dict[str, Any] | None = None  # name, before, after, source, samples
    onnx_size_bytes: dict[str, int] | None = None
    speedup_note: str = ""
    output: str = ""
    sidecar: str = ""
    sha256: str = ""
    dynamic_batch: bool = False
    parity: dict[str, float] = field(default_factory=dict)  # saved .pt2 vs in-memory pruned model
    kept_layers: dict[str, list[str]] = field(default_factory=dict)
    narrowed_layers: int = 0
    finetune: dict[str, Any] | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def validate_config(config: PruneConfig) -> None:
    """Reject bad requests before any model is built (raises `UsageError`)."""
    if config.mode not in MODES:
        raise UsageError(f"unknown pruning mode '{config.mode}'; choices: {', '.join(MODES)}")
    upper = MAX_STRUCTURED_SPARSITY if config.mode == "structured" else 0.999
    if not 0.0 < config.sparsity <= upper:
        raise UsageError(f"--sparsity must be in (0, {upper:g}] for {config.mode} pruning (got {config.sparsity:g}); "
                         "e.g. --sparsity 0.5 removes half of the channels/weights")
    if Path(config.output).suffix != ".pt2":
        raise UsageError(f"output '{config.output}' must end in .pt2: the pruned model is saved as an ExportedProgram "
                         "that 'medge export' accepts")
    if config.finetune and config.epochs < 1:
        raise UsageError(f"--epochs must be >= 1 (got {config.epochs})")
    if config.finetune and not config.lr > 0:
        raise UsageError(f"--lr must be > 0 (got {config.lr:g})")
    if config.round_to is not None and config.round_to < 1:
        raise UsageError(f"--round-to must be >= 1 (got {config.round_to})")
    if config.metric:
        from medge.quantize.metrics import check_metric_name

        check_metric_name(config.metric)


def _load(config: PruneConfig):
    from medge.export import load_model

    loaded = load_model(config.model, config.weights, config.model_kwargs, config.input_shape)
    if loaded.kind in ("exported-program", "torchscript"):
        raise UsageError(f"cannot prune '{config.model}' ({loaded.kind}): pruning needs the PyTorch module; "
                         "give a zoo name or package.module:factory with --weights")
    return loaded


def _load_sets(config: PruneConfig, loaded):
    from medge.calibration import check_overlap, load_data

    def load(source: str, n: int, split: str):
        return load_data(source, loaded.meta, input_name=loaded.input_names[0], input_shape=loaded.input_shape,
                         n=n, split=split, seed=config.seed)

    train = load(config.finetune, config.finetune_samples, "calib") if config.finetune else None
    evaluation = load(config.eval, config.eval_samples, "eval") if config.eval else None
    if train is not None and evaluation is not None:
        check_overlap(train, evaluation)
    return train, evaluation


def _metric_name(config: PruneConfig, task: str) -> str:
    from medge.quantize.metrics import default_metric_for_task

    return config.metric or default_metric_for_task(task)


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
    from medge.quantize.prune_methods import (
        apply_unstructured_masks,
        output_layers,
        prunable_weights,
        prune_structured,
    )

    if config.mode == "structured":
        try:
            return prune_structured(module, example, config.sparsity, config.round_to), []
        except MedgeError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch_pruning fails in many ways on unusual graphs
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PruneError(f"torch_pruning cannot prune the channels of '{config.model}' consistently "
                             f"({type(exc).__name__}: {first[:160]}); use --mode unstructured") from None
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

    from medge.fileio import sha256_file, write_json_atomic

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


def _prune_and_finetune(config: PruneConfig, report: PruneReport, loaded, reference, example, train, evaluation) -> None:
    """Prune ``loaded.module`` in place, fine-tune it when asked, and fill the metric/finetune fields."""
    from medge.quantize.prune_finetune import evaluate, finetune

    module = loaded.module
    metric: dict[str, Any] | None = None
    if evaluation is not None:
        name = _metric_name(config, loaded.meta.task)
        metric = {"name": name, "before": evaluate(reference, evaluation, name),
                  "source": config.eval, "samples": len(evaluation)}
    structured, masked = _prune(config, module, example)
    if structured is not None:
        _check_shapes(reference, module, example, config.model)
        report.kept_layers = {"output": structured.output_layers, "token": structured.token_layers}
        report.narrowed_layers = structured.narrowed_layers
    if train is not None:
        if metric is not None:
            metric["after_pruning_before_finetune"] = evaluate(module, evaluation, metric["name"])
        result = finetune(module, train, loaded.meta.task, epochs=config.epochs, lr=config.lr,
                          batch_size=config.batch_size, seed=config.seed)
        report.finetune = dataclasses.asdict(result)
    if masked:
        from medge.quantize.prune_methods import remove_unstructured_masks

        zeros = remove_unstructured_masks(module, masked)
        report.zero_fraction, report.zero_fraction_all_params = zeros.zero_fraction, zeros.zero_fraction_all_params
    if metric is not None:
        metric["after"] = evaluate(module, evaluation, metric["name"])
    report.metric = metric


def prune_model(config: PruneConfig) -> PruneReport:
    """Prune `config.model`, optionally fine-tune and evaluate it, and save it as a ``.pt2``.

    Raises a `MedgeError` subclass for bad requests; nothing is written at ``config.output`` then.
    """
    validate_config(config)
    import torch

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    loaded = _load(config)
    if config.eval:
        _metric_name(config, loaded.meta.task)  # fail before any work when the task has no metric
    if config.finetune:
        from medge.quantize.prune_finetune import loss_name

        loss_name(loaded.meta.task)  # fail before any work when the task has no loss
    train, evaluation = _load_sets(config, loaded)
    example = torch.randn(loaded.input_shape, generator=torch.Generator().manual_seed(config.seed))
    reference = copy.deepcopy(loaded.module)
    report = PruneReport(model=config.model, mode=config.mode, sparsity=config.sparsity)
    _prune_and_finetune(config, report, loaded, reference, example, train, evaluation)
    _fill_complexity(report, reference, loaded.module, example, loaded.input_shape, config.measure_onnx)
    pruning = {"mode": config.mode, "sparsity": config.sparsity, "source_model": config.model,
               "source_sha256": loaded.sha256, "finetune": config.finetune}
    saved = save_pruned(loaded.module, loaded, config.output, pruning)
    report.output, report.sidecar = str(config.output), str(sidecar_path(config.output))
    report.sha256, report.dynamic_batch = saved["sha256"], saved["dynamic_batch"]
    report.parity = {"max_abs_error": saved["max_abs_error"], "atol": _PARITY_ATOL}
    if not report.dynamic_batch:
        report.notes.append("torch.export could not make the batch dynamic: the .pt2 takes batch "
                            f"{loaded.input_shape[0]} only")
    if loaded.meta.task == "unknown":
        report.notes.append("no task/labels known for this model: the sidecar carries task 'unknown'")
    report.seconds = round(time.perf_counter() - started, 3)
    return report
