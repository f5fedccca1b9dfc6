"""Demo feeds for zoo models whose inputs are another zoo model's intermediate tensors.

Their preprocessing is ``{"kind": "embedding", "source": MODEL}``: no image or signal goes in, so
no synthetic generator fits them directly.  Their feeds are made by running the source model on
its own synthetic data:

* ``us-lesion-sam-decoder``: the ``embedding`` output of ``us-lesion-sam-encoder`` on synthetic
  ultrasound frames, the click at its declared default, and the frames' lesion masks as targets
  (so the decoder gets the Dice gate);
* ``ecg-mamba-3to12-step``: stem tokens of ``ecg-mamba-3to12`` on synthetic ECGs, with the
  convolution window and scan state that stepping the signal from zeros reaches at that token,
  taken at evenly spread steps (no targets: the step is gated on parity).

`write_derived_feeds` writes them as an ``.npz`` with one array per input name (what
``--calib FILE.npz`` reads), so the bundle's calibration hash names a real file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medge.common.fileio import atomic_path
from medge.calibration import load_data
from medge.export import load_model
from medge.zoo import build_model, get_card

STEP_POSITIONS = 10  # steps taken from each synthetic ECG


def has_derived_feeds(name: str) -> bool:
    """Whether `name` is a zoo model whose demo feeds come from running another zoo model."""
    return name in _MAKERS


def derived_feeds_have_targets(name: str) -> bool:
    """Whether the derived feeds of `name` carry targets (so they can serve a metric gate)."""
    return name in _WITH_TARGETS


def write_derived_feeds(name: str, path: Path, n: int, split: str, seed: int = 0) -> Path:
    """Write `n` feeds (and targets, when the task has them) of zoo model `name` to `path` (.npz)."""
    arrays = _MAKERS[name](n, split, seed)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def _source_samples(model: str, n: int, split: str, seed: int):
    loaded = load_model(model)
    card = get_card(model)
    data = load_data("synthetic", loaded.meta, input_name=card.input_name, input_shape=tuple(card.input_shape),
                     n=n, split=split, seed=seed)
    return loaded.module.eval(), card.input_name, data.samples


def _sam_decoder(n: int, split: str, seed: int) -> dict[str, np.ndarray]:
    import torch

    encoder, input_name, samples = _source_samples("us-lesion-sam-encoder", n, split, seed)
    with torch.no_grad():
        embeddings = [encoder(torch.from_numpy(s.feeds[input_name])).numpy() for s in samples]
    point = next(i for i in get_card("us-lesion-sam-decoder").extra_inputs if i["name"] == "point")
    clicks = np.broadcast_to(np.asarray(point["default"], dtype=np.float32), (len(samples), *point["shape"][1:]))
    arrays = {"embedding": np.concatenate(embeddings).astype(np.float32), "point": np.ascontiguousarray(clicks)}
    if all(s.target is not None for s in samples):
        arrays["masks"] = np.stack([np.asarray(s.target) for s in samples])
    return arrays


def _mamba_step(n: int, split: str, seed: int) -> dict[str, np.ndarray]:
    import torch

    signals = -(-n // STEP_POSITIONS)
    parent, input_name, samples = _source_samples("ecg-mamba-3to12", signals, split, seed)
    step = build_model("ecg-mamba-3to12-step")
    with torch.no_grad():
        x = torch.from_numpy(np.concatenate([s.feeds[input_name] for s in samples]))
        tokens = parent.stem(x).transpose(1, 2)  # (signals, length, dim)
        length = tokens.shape[1]
        picks = set(np.linspace(0, length - 1, STEP_POSITIONS).round().astype(int).tolist())
        blocks, inner = len(parent.blocks), parent.blocks[0].conv.weight.shape[0]
        conv = torch.zeros(len(samples), blocks, inner, 3)
        ssm = torch.zeros(len(samples), blocks, inner, parent.blocks[0].state)
        feeds: dict[str, list[np.ndarray]] = {"token": [], "conv_state": [], "ssm_state": []}
        for t in range(max(picks) + 1):
            token = tokens[:, t:t + 1]
            if t in picks:  # the inputs of step t: the token and the states before it
                for key, value in (("token", token), ("conv_state", conv), ("ssm_state", ssm)):
                    feeds[key].append(value.numpy().copy())
            _, conv, ssm = step(token, conv, ssm)
    # sample-major order (every step of the first ECG, then the next), cut to n
    return {key: np.stack(values, axis=1).reshape(-1, *values[0].shape[1:])[:n].astype(np.float32)
            for key, values in feeds.items()}


_MAKERS = {"us-lesion-sam-decoder": _sam_decoder, "ecg-mamba-3to12-step": _mamba_step}
_WITH_TARGETS = frozenset({"us-lesion-sam-decoder"})
