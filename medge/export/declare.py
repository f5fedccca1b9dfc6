"""Declared preprocessing, task and labels for any model (not only zoo models).

A user's own network carries no card, so `medge export` (and `medge build`) take its description:

* ``--preprocess FILE|JSON``: the preprocessing block of the metadata schema (`medge.common.metadata`);
* shorthand flags that override it: ``--modality``, ``--intensity unit|uint8|minmax|window``,
  ``--window C,W``, ``--mean``, ``--std``, ``--channels``, ``--layout``, and for signals
  ``--leads``, ``--sample-rate``, ``--units``;
* ``--like ZOO_NAME``: start from a zoo card's preprocessing, labels and task;
* ``--task`` and ``--labels``.

When nothing is declared, an image model (rank 4, 1 or 3 channels) gets the documented default
`assumed_image_preprocessing`: min–max intensity to [0, 1], resize to the input size, no mean/std.
Its ``assumed`` key lists the fields that were not declared, so that the export report, ``medge
inspect`` and the quantize/compile reports can say so.

This module is light (no torch, no argparse): the CLI's flags for it are in
`medge.commands.common_args` (`add_declaration_arguments`, `declaration_from_args`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from medge.common.errors import UsageError, did_you_mean
from medge.common.metadata import TASKS, assumed_note
from medge.zoo import MODELS, get_card

INTENSITIES = ("unit", "uint8", "minmax", "window")
IMAGE_LAYOUTS = ("NCHW", "NHWC")
SIGNAL_LAYOUTS = ("NCL", "NLC")
MODALITIES = ("CR", "DX", "CT", "MR", "US", "MG", "PT", "NM", "XA", "RF", "SM", "OCT", "OP", "ES", "ECG", "OT")
UNITS = ("mV", "uV", "V")
# Fields of an image block that the documented default fills when they are not declared.
IMAGE_DEFAULTS: dict[str, Any] = {"modality": "OT", "intensity": "minmax", "window_center": None,
                                  "window_width": None, "mean": None, "std": None}
SIGNAL_DEFAULTS: dict[str, Any] = {"modality": "ECG", "units": "mV", "scale": 1.0}
IMAGE_KEYS = {"kind", "modality", "channels", "height", "width", "layout", "intensity", "window_center",
              "window_width", "mean", "std", "assumed"}
SIGNAL_KEYS = {"kind", "modality", "leads", "sample_rate_hz", "samples", "units", "layout", "scale", "assumed"}


@dataclass
class Declaration:
    """What the user declared about a model (every field optional)."""

    preprocess: str | None = None
    modality: str | None = None
    intensity: str | None = None
    window: str | None = None
    mean: str | None = None
    std: str | None = None
    channels: int | None = None
    layout: str | None = None
    leads: str | None = None
    sample_rate: float | None = None
    units: str | None = None
    like: str | None = None
    task: str | None = None
    labels: str | None = None

    def preprocessing_declared(self) -> bool:
        """True when any preprocessing field (not only task/labels) was given."""
        return any(getattr(self, f.name) is not None for f in fields(self) if f.name not in ("task", "labels"))

    def any(self) -> bool:
        """True when anything at all was declared."""
        return any(getattr(self, f.name) is not None for f in fields(self))


def _floats(text: str, flag: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"{flag} '{text}' is not a comma-separated list of numbers, e.g. {flag} 0.485,0.456,0.406") from None
    if not values:
        raise UsageError(f"{flag} is empty; give one number or one per channel")
    return values


def _read_preprocess(text: str) -> dict[str, Any]:
    path = Path(text)
    stripped = text.strip()
    if not stripped.startswith("{"):
        if not path.is_file():
            raise UsageError(f"--preprocess '{text}' is neither a JSON object nor an existing file")
        stripped = path.read_text()
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--preprocess is not valid JSON ({exc.msg} at char {exc.pos}); "
                         "e.g. '{\"kind\": \"image\", \"intensity\": \"window\", ...}'") from None
    if not isinstance(value, dict):
        raise UsageError("--preprocess must be a JSON object (the 'preprocessing' block of the metadata schema)")
    if isinstance(value.get("preprocessing"), dict):  # a whole metadata/card dict: take its block
        value = value["preprocessing"]
    return dict(value)


def _input_kind(shape: tuple[int, ...], decl: Declaration, base: dict[str, Any]) -> str | None:
    if base.get("kind") in ("image", "signal"):
        return base["kind"]
    if decl.leads or decl.sample_rate is not None or decl.units:
        return "signal"
    if len(shape) == 4:
        return "image"
    if len(shape) == 3 and decl.preprocessing_declared():
        return "signal"
    return None


def assumed_image_preprocessing(shape: tuple[int, ...]) -> dict[str, Any] | None:
    """The documented default for an undeclared rank-4 NCHW model with 1 or 3 channels, else None."""
    if len(shape) != 4 or shape[1] not in (1, 3):
        return None
    return {"kind": "image", "channels": int(shape[1]), "height": int(shape[2]), "width": int(shape[3]),
            "layout": "NCHW", **IMAGE_DEFAULTS, "assumed": sorted(k for k in IMAGE_DEFAULTS if not k.startswith("window_"))}


def _apply_image(pre: dict[str, Any], decl: Declaration, shape: tuple[int, ...]) -> None:
    if decl.layout:
        pre["layout"] = decl.layout.upper()
    layout = str(pre.get("layout", "NCHW")).upper()
    if layout not in IMAGE_LAYOUTS:
        raise UsageError(f"--layout {layout} is not an image layout; use {' or '.join(IMAGE_LAYOUTS)}")
    if len(shape) != 4:
        raise UsageError(f"image preprocessing needs a rank-4 input, but the input shape is {'x'.join(map(str, shape))}")
    c, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    if decl.channels is not None and decl.channels != c:
        raise UsageError(f"--channels {decl.channels} does not match the input shape {'x'.join(map(str, shape))} "
                         f"({c} channels in {layout})")
    pre.update(kind="image", layout=layout, channels=int(c), height=int(h), width=int(w))
    if decl.modality:
        pre["modality"] = decl.modality
    if decl.window is not None:
        cw = _floats(decl.window, "--window")
        if len(cw) != 2 or cw[1] <= 0:
            raise UsageError(f"--window '{decl.window}' must be CENTER,WIDTH with WIDTH > 0, e.g. --window 40,400")
        pre.update(window_center=cw[0], window_width=cw[1])
        if decl.intensity not in (None, "window"):
            raise UsageError(f"--window sets intensity 'window', which contradicts --intensity {decl.intensity}")
        pre["intensity"] = "window"
    if decl.intensity:
        pre["intensity"] = decl.intensity
    for name in ("mean", "std"):
        text = getattr(decl, name)
        if text is not None:
            pre[name] = _floats(text, f"--{name}")
    _validate_image(pre)


def _validate_image(pre: dict[str, Any]) -> None:
    unknown = sorted(set(pre) - IMAGE_KEYS)
    if unknown:
        raise UsageError(f"unknown image preprocessing key(s) {', '.join(unknown)}; known: {', '.join(sorted(IMAGE_KEYS))}")
    intensity = pre.get("intensity")
    if intensity not in INTENSITIES:
        raise UsageError(f"intensity '{intensity}' is not one of {', '.join(INTENSITIES)}")
    if intensity == "window" and (pre.get("window_center") is None or pre.get("window_width") is None):
        raise UsageError("intensity 'window' needs a window: add --window CENTER,WIDTH")
    if pre.get("window_width") is not None and float(pre["window_width"]) <= 0:
        raise UsageError(f"window width {pre['window_width']} must be > 0")
    modality = str(pre.get("modality", "OT"))
    if modality.upper() not in MODALITIES:
        raise UsageError(f"unknown modality '{modality}';{did_you_mean(modality.upper(), list(MODALITIES))} "
                         f"use one of {', '.join(MODALITIES)}")
    pre["modality"] = modality.upper()
    channels = int(pre["channels"])
    for name in ("mean", "std"):
        values = pre.get(name)
        if values is None:
            continue
        values = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
        if len(values) not in (1, channels):
            raise UsageError(f"--{name} has {len(values)} values but the model has {channels} channel(s); give one value or {channels}")
        if name == "std" and any(v <= 0 for v in values):
            raise UsageError("--std values must be > 0")
        pre[name] = values


def _apply_signal(pre: dict[str, Any], decl: Declaration, shape: tuple[int, ...]) -> None:
    if len(shape) != 3:
        raise UsageError(f"signal preprocessing needs a rank-3 input (N, leads, samples), got {'x'.join(map(str, shape))}")
    if decl.layout:
        pre["layout"] = decl.layout.upper()
    layout = str(pre.get("layout", "NCL")).upper()
    if layout not in SIGNAL_LAYOUTS:
        raise UsageError(f"--layout {layout} is not a signal layout; use {' or '.join(SIGNAL_LAYOUTS)}")
    n_leads, samples = (shape[1], shape[2]) if layout == "NCL" else (shape[2], shape[1])
    if decl.leads:
        pre["leads"] = [s.strip() for s in decl.leads.split(",") if s.strip()]
    if decl.sample_rate is not None:
        if decl.sample_rate <= 0:
            raise UsageError(f"--sample-rate {decl.sample_rate:g} must be > 0 Hz")
        pre["sample_rate_hz"] = float(decl.sample_rate)
    if decl.units:
        pre["units"] = decl.units
    if decl.modality:
        pre["modality"] = decl.modality.upper()
    pre.update(kind="signal", layout=layout, samples=int(samples))
    leads = pre.get("leads") or []
    if len(leads) != n_leads:
        raise UsageError(f"--leads names {len(leads)} lead(s) but the input has {n_leads}; "
                         f"name one per input channel, e.g. --leads {','.join(['II', 'V1', 'V5'][:n_leads] or ['II'])}")
    if pre.get("sample_rate_hz") is None:
        raise UsageError("a signal model needs its sample rate: add --sample-rate HZ (e.g. --sample-rate 500)")
    unknown = sorted(set(pre) - SIGNAL_KEYS)
    if unknown:
        raise UsageError(f"unknown signal preprocessing key(s) {', '.join(unknown)}; known: {', '.join(sorted(SIGNAL_KEYS))}")


def _like(name: str) -> tuple[dict[str, Any], str, list[str]]:
    card = get_card(name)  # unknown names: UnknownNameError with a suggestion
    return dict(card.preprocessing), card.task, list(card.labels)


def resolve_declaration(decl: Declaration, shape: tuple[int, ...], base: dict[str, Any] | None = None,
                        task: str = "unknown", labels: list[str] | None = None) -> tuple[dict[str, Any], str, list[str]]:
    """(preprocessing, task, labels) for a model with input `shape`, from `decl` over `base`.

    Without any declared preprocessing the result is `base` when it has a kind, else the documented
    default (`assumed_image_preprocessing`), else ``{}``.  Declared blocks fill undeclared fields
    from the default and list them under ``assumed``.  Bad values raise `UsageError`.
    """
    labels = list(labels or [])
    pre: dict[str, Any] = dict(base or {})
    if decl.like:
        pre, task, labels = _like(decl.like)
    if decl.preprocess:
        pre.update(_read_preprocess(decl.preprocess))
    if decl.task is not None:
        if decl.task not in TASKS:
            raise UsageError(f"unknown --task '{decl.task}';{did_you_mean(decl.task, list(TASKS))} use one of {', '.join(TASKS)}")
        task = decl.task
    if decl.labels is not None:
        labels = [s.strip() for s in decl.labels.split(",") if s.strip()]
        if not labels:
            raise UsageError("--labels is empty; give comma-separated names, e.g. --labels effusion,nodule")
    if not decl.preprocessing_declared() and not pre.get("kind"):
        return assumed_image_preprocessing(shape) or {}, task, labels
    kind = _input_kind(shape, decl, pre)
    if kind is None:
        raise UsageError(f"cannot tell whether input {'x'.join(map(str, shape))} is an image or a signal; "
                         "add \"kind\" to --preprocess or use --leads/--sample-rate for signals")
    declared = set(pre)
    if kind == "image":
        defaults = IMAGE_DEFAULTS
        pre = {**defaults, **pre}
        _apply_image(pre, decl, shape)
    else:
        defaults = SIGNAL_DEFAULTS
        pre = {**defaults, **pre}
        _apply_signal(pre, decl, shape)
    flags = {"modality": decl.modality, "intensity": decl.intensity or decl.window, "window_center": decl.window,
             "window_width": decl.window, "mean": decl.mean, "std": decl.std, "units": decl.units}
    assumed = sorted(k for k in defaults if k not in declared and flags.get(k) is None)
    if kind == "image" and pre.get("intensity") != "window":
        assumed = [k for k in assumed if not k.startswith("window_")]
    pre.pop("assumed", None)
    if assumed and not decl.like and kind == "image":  # signal defaults (ECG, scale 1) change nothing
        pre["assumed"] = assumed
    return pre, task, labels


def apply_declaration(loaded: Any, decl: Declaration) -> list[str]:
    """Apply `decl` to a `medge.export.LoadedModel`'s metadata in place; returns report notes.

    Zoo models carry their description in their card, so declaring anything for one is a
    `UsageError`.
    """
    if loaded.kind == "zoo":
        check_declaration(loaded.meta.model, decl, None)
        return []
    meta = loaded.meta
    base = {} if (meta.preprocessing or {}).get("assumed") else meta.preprocessing
    if decl.any() or not base:
        meta.preprocessing, meta.task, meta.labels = resolve_declaration(
            decl, tuple(loaded.input_shape), base=base, task=meta.task, labels=meta.labels)
    note = assumed_note(meta.preprocessing)
    return [note] if note else []


def check_declaration(model: str, decl: Declaration, shape: tuple[int, ...] | None) -> None:
    """Validate `decl` before any model is built (`UsageError` on a bad value or a zoo model)."""
    if not decl.any():
        return

    if model in MODELS.names():
        raise UsageError("preprocessing/--task/--labels/--like are for your own models; zoo models carry them "
                         "in their card (export the factory as package.module:factory to describe it yourself)")
    if shape is not None:
        resolve_declaration(decl, tuple(shape))
