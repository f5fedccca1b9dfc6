"""Built-in medical models: cards (`MODELS`), architectures and demo weights.

``build_model(name)`` returns an eval-mode ``torch.nn.Module`` whose outputs are probabilities
(classifiers, segmenter) or millivolts (ECG); demo weights, when a card has them, are loaded from
``medge/zoo/weights/<name>.safetensors`` with ``safetensors`` (never ``torch.load``).
Importing this package is light: torch and MONAI are imported only by `build_model`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medge.common.errors import ModelLoadError
from medge.common.registry import Registry, resolve_reference
from medge.zoo.card import ModelCard
from medge.zoo.catalog import WEIGHTS_DIR, load_cards

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "ModelCard", "build_model", "get_card", "input_shapes", "load_safetensors_weights",
           "measure_complexity", "weights_path"]

MODELS: Registry[ModelCard] = Registry("zoo model")
for _card in load_cards():
    MODELS.register(_card.name, _card)
del _card


def get_card(name: str) -> ModelCard:
    """The card of zoo model `name`; unknown names raise `UnknownNameError` with a suggestion."""
    return MODELS.get(name)


def weights_path(card: ModelCard | str) -> Path | None:
    """Path of the card's demo weights file, or None when the model ships without weights."""
    if isinstance(card, str):
        card = get_card(card)
    return WEIGHTS_DIR / card.weights if card.weights else None


def build_model(name: str, pretrained: bool = True) -> "nn.Module":
    """Build zoo model `name` in eval mode; with `pretrained`, load its demo weights if it has any."""
    card = get_card(name)
    factory = resolve_reference(card.factory)
    model = factory(**card.factory_kwargs)
    path = weights_path(card) if pretrained else None
    if path is not None:
        load_safetensors_weights(model, path)
    return model.eval()


def load_safetensors_weights(model: "nn.Module", path: str | Path) -> None:
    """Load a safetensors state dict into `model` strictly; problems raise `ModelLoadError`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} not found; retrain with scripts/train_demo_weights.py")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelLoadError(f"cannot read weights {path}: {exc}; re-create the file") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelLoadError(f"weights {path.name} do not fit the architecture ({first}); retrain them") from exc


def input_shapes(card: ModelCard) -> list[tuple[int, ...]]:
    """Batch-1 shapes of every input of `card` (the image first, then ``extra_inputs``)."""
    return [tuple(card.input_shape)] + [tuple(i["shape"]) for i in card.extra_inputs]


def measure_complexity(name: str) -> dict[str, int]:
    """Count params and batch-1 MACs of zoo model `name` (what ``complexity.json`` stores)."""
    from medge.zoo.complexity import count_macs, count_params

    card = get_card(name)
    model = build_model(name, pretrained=False)
    return {"params": count_params(model), "macs": count_macs(model, input_shapes(card))}
