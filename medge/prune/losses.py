"""Task losses used next to distillation when the training data carry labels.

The loss follows the model's task: binary cross-entropy on the output probabilities for
(multi-label) classification, BCE + soft Dice for segmentation, L1 in mV for ECG reconstruction.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from medge.common.errors import DataError

LOSSES = {
    "multilabel-classification": "bce",
    "classification": "bce",
    "segmentation": "bce+dice",
    "ecg-reconstruction": "l1",
}
_EPS = 1e-6


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
