"""Open an ECG reconstruction model through medge.runtimes, preprocessing from its metadata.

``--model`` is anything `medge.apps.model.AppModel` opens (a bundle folder, ``.onnx``, ``.xml``,
``.tflite`` with medge metadata) or a zoo name, which is exported once to ONNX into the user cache
(``$XDG_CACHE_HOME/medge/apps``).  The leads, sample rate, window length and scale all come
from the metadata; nothing about the model is hard-coded here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medge.apps.ecg.reconstruct import LeadModel
from medge.errors import DataError, ModelLoadError

DERIVE_KEY = "derive_limb_leads"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medge" / "apps"


def resolve_artifact(ref: str) -> Path:
    """A model path, or the cached ONNX export of a zoo model (exported on first use)."""
    path = Path(ref)
    if path.exists() or path.suffix or "/" in ref:
        return path  # AppModel names a missing or unreadable file in its own one-line error
    from medge.zoo import MODELS  # light: the registry does not build models

    if ref not in MODELS.names():
        from medge.errors import did_you_mean

        raise ModelLoadError(f"model '{ref}' is neither a file nor a zoo model;{did_you_mean(ref, MODELS.names())} "
                             "pass an .onnx file or a zoo name such as ecg-3to12")
    target = _cache_dir() / f"{ref}.onnx"
    if not target.is_file():
        from medge.export import export_onnx

        target.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(ref, target)
    return target


def load_lead_model(ref: str, threads: int | None = None):
    """(`LeadModel`, open `medge.apps.model.AppModel`) for `ref`; close the AppModel when done."""
    from medge.apps.model import AppModel

    app = AppModel.open(resolve_artifact(ref), role="--model", expect_task="ecg-reconstruction", threads=threads)
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
