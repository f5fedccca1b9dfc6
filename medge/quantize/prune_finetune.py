"""Short fine-tuning and evaluation of a pruned PyTorch model on medge data sets.

Data come from `medge.calibration.load_data` (model-ready feeds + targets).  The loss follows
the model's task: binary cross-entropy on the output probabilities for (multi-label)
classification, BCE + soft Dice for segmentation, L1 in mV for ECG reconstruction.  Normalisation
layers keep their running statistics during fine-tuning (a few samples would only corrupt them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medge.errors import DataError, UsageError

LOSSES = {
    "multilabel-classification": "bce",
    "classification": "bce",
    "segmentation": "bce+dice",
    "ecg-reconstruction": "l1",
}
_EPS = 1e-6


@dataclass
class FinetuneResult:
    """What fine-tuning did: data, schedule, loss and how the loss moved."""

    source: str
    samples: int
    epochs: int
    lr: float
    batch_size: int
    loss: str
    loss_first_epoch: float
    loss_last_epoch: float
    seconds: float
    data_sha256: str = ""
    losses: list[float] = field(default_factory=list)


def loss_name(task: str) -> str:
    """The fine-tuning loss for a model task; unknown tasks raise `UsageError`."""
    try:
        return LOSSES[task]
    except KeyError:
        raise UsageError(
            f"cannot fine-tune a model with task '{task}': the loss depends on the task "
            f"({', '.join(LOSSES)}); use a zoo model or drop --finetune"
        ) from None


def _soft_dice_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, probs.dim()))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    return (1.0 - (2.0 * inter + 1.0) / (denom + 1.0)).mean()


def task_loss(name: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss `name` (see `LOSSES`) of model `outputs` (probabilities or mV) against `targets`."""
    if targets.numel() != outputs.numel():
        raise DataError(f"targets of shape {tuple(targets.shape)} do not match model outputs {tuple(outputs.shape)}; "
                        "give data labelled for this model")
    targets = targets.to(outputs.dtype).reshape(outputs.shape)
    if name == "l1":
        return F.l1_loss(outputs, targets)
    probs = outputs.clamp(_EPS, 1.0 - _EPS)
    bce = F.binary_cross_entropy(probs, targets)
    if name == "bce":
        return bce
    return bce + _soft_dice_loss(probs, targets)


def _check_targets(dataset, what: str) -> np.ndarray:
    targets = dataset.targets()
    if targets is None:
        raise DataError(f"the {what} data '{dataset.report.source}' has no labels/targets; "
                        "give a labelled source (e.g. synthetic:<task>, a labels.csv folder or an .npz with targets)")
    return targets


def _freeze_norm_statistics(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.eval()


def finetune(module: nn.Module, dataset, task: str, *, epochs: int, lr: float, batch_size: int = 8,
             seed: int = 0) -> FinetuneResult:
    """Fine-tune `module` in place with Adam on `dataset` for `epochs` epochs; returns the losses."""
    if epochs < 1:
        raise UsageError(f"--epochs must be >= 1 (got {epochs})")
    if not lr > 0:
        raise UsageError(f"--lr must be > 0 (got {lr})")
    loss = loss_name(task)
    targets = torch.from_numpy(np.asarray(_check_targets(dataset, "fine-tuning"), dtype=np.float32))
    inputs = torch.from_numpy(dataset.inputs())
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    started = time.perf_counter()
    epoch_losses: list[float] = []
    module.train()
    _freeze_norm_statistics(module)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                optimizer.zero_grad(set_to_none=True)
                value = task_loss(loss, module(inputs[idx]), targets[idx])
                value.backward()
                optimizer.step()
                total += float(value.detach()) * len(idx)
            epoch_losses.append(total / len(order))
    finally:
        module.eval()
    return FinetuneResult(
        source=dataset.report.source, samples=len(inputs), epochs=epochs, lr=lr, batch_size=batch_size,
        loss=loss, loss_first_epoch=epoch_losses[0], loss_last_epoch=epoch_losses[-1],
        seconds=round(time.perf_counter() - started, 3), data_sha256=dataset.sha256, losses=epoch_losses,
    )


def predict(module: nn.Module, dataset, batch_size: int = 16) -> np.ndarray:
    """Outputs of `module` (eval mode, no grad) on every sample of `dataset`, stacked."""
    module.eval()
    chunks = []
    with torch.no_grad():
        for feeds in dataset.batches(batch_size):
            out = module(torch.from_numpy(feeds[dataset.input_name]))
            if isinstance(out, (tuple, list)):
                out = out[0]
            chunks.append(out.float().numpy())
    return np.concatenate(chunks, axis=0)


def evaluate(module: nn.Module, dataset, metric: str) -> float:
    """Task metric `metric` (``medge.quantize.metrics``) of `module` on the labelled `dataset`."""
    from medge.quantize.metrics import task_metric

    targets = _check_targets(dataset, "evaluation")
    return float(task_metric(metric, predict(module, dataset), targets))
