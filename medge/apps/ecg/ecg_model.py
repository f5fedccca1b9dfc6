"""Open an ECG reconstruction model through medge.runtimes, preprocessing from its metadata.

``--model`` is anything `medge.apps.model.AppModel` opens (a bundle folder, ``.onnx``, ``.xml``,
``.tflite`` with medge metadata) or a zoo name, which is exported once to ONNX into the user cache
(``$XDG_CACHE_HOME/medge/apps``; on a device without torch the cached file is used).  The leads, sample rate, window length and scale all come
from the metadata; nothing about the model is hard-coded here.

A zoo model can also be opened at a shorter window (``samples``): it is a convolutional net, so
it is exported once more at that length (``NAME-<samples>.onnx`` in the same cache).  The live
stream uses this for hops under a second: a 2 s window costs a fifth of the 10 s one and, as long
as the window spans the net's receptive field beyond the emitted samples, gives the same output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medge.apps.ecg.reconstruct import LeadModel
from medge.apps.model import AppModel
from medge.apps.zoo_cache import cache_dir, is_zoo_name, zoo_onnx
from medge.common.errors import DataError, ModelLoadError, did_you_mean
from medge.export import export_onnx
from medge.zoo import MODELS, get_card

DERIVE_KEY = "derive_limb_leads"


def resolve_artifact(ref: str, samples: int | None = None) -> Path:
    """A model path, or the cached ONNX export of a zoo model (exported on first use, see `medge.apps.zoo_cache`),
    at `samples` per window when given (zoo models only; a file keeps its own window)."""
    path = Path(ref)
    if path.exists() or path.suffix or "/" in ref:
        return path  # AppModel names a missing or unreadable file in its own one-line error
    if not is_zoo_name(ref):
        raise ModelLoadError(f"model '{ref}' is neither a file nor a zoo model;{did_you_mean(ref, MODELS.names())} "
                             "pass an .onnx file or a zoo name such as ecg-3to12")
    full = zoo_onnx(ref, "--model")  # also says in one line what is missing to export it

    card = get_card(ref)
    if samples is None or samples == int(card.preprocessing["samples"]):
        return full
    target = cache_dir() / f"{ref}-{samples}.onnx"
    if not target.is_file():
        export_onnx(ref, target, input_shape=(*card.input_shape[:2], samples))
    return target


def load_lead_model(ref: str, threads: int | None = None, samples: int | None = None):
    """(`LeadModel`, open `medge.apps.model.AppModel`) for `ref`; close the AppModel when done.

    `samples`: the window length at the model's rate for a zoo model (default: the card's).
    """
    app = AppModel.open(resolve_artifact(ref, samples), role="--model", expect_task="ecg-reconstruction",
                        threads=threads)
    pre, meta = app.preprocessing, app.meta
    for key in ("leads", "sample_rate_hz", "samples"):
        if not pre.get(key):
            raise DataError(f"model {ref} metadata lacks preprocessing '{key}'; re-export the model")
    if str(pre.get("layout", "NCL")).upper() != "NCL":
        raise DataError(f"model {ref} wants layout {pre.get('layout')}; the ECG app feeds NCL (leads, samples)")

    def infer(x: np.ndarray) -> np.ndarray:
        return app.run(x)[0]

    model = LeadModel(infer, tuple(pre["leads"]), tuple(meta.labels), float(pre["sample_rate_hz"]),
                      int(pre["samples"]), float(pre.get("scale", 1.0)),
                      bool((meta.extra or {}).get(DERIVE_KEY, True)), Path(str(ref)).name)
    return model, app
