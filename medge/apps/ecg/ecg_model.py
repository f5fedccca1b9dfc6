"""Open an ECG reconstruction model through medge.runtimes, preprocessing from its metadata.

``--model`` is an artifact with medge metadata (``.onnx`` embeds it; other artifacts carry a
``<file>.medge.json`` sidecar) or a zoo name, which is exported once to ONNX into the user cache
(``$XDG_CACHE_HOME/medge/apps``).  The leads, sample rate, window length and scale all come
from the metadata; nothing about the model is hard-coded here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medge.apps.ecg.reconstruct import LeadModel
from medge.errors import DataError, ModelLoadError
from medge.metadata import ModelMeta, read_sidecar

DERIVE_KEY = "derive_limb_leads"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medge" / "apps"


def resolve_artifact(ref: str) -> Path:
    """A model path, or the cached ONNX export of a zoo model (exported on first use)."""
    path = Path(ref)
    if path.exists():
        if path.is_dir():
            raise ModelLoadError(f"--model {ref} is a folder; pass the model file inside it (e.g. model.onnx)")
        return path
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


def read_meta(artifact: Path) -> ModelMeta:
    """The model's medge metadata (embedded in ONNX, else the sidecar)."""
    meta = None
    if artifact.suffix == ".onnx":
        from medge.metadata import read_metadata

        try:
            meta = read_metadata(artifact)
        except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise ModelLoadError(f"cannot read {artifact.name} as ONNX ({type(exc).__name__}); "
                                 "pass a valid .onnx file") from None
    meta = meta or read_sidecar(artifact)
    if meta is None:
        raise ModelLoadError(f"{artifact.name} carries no medge metadata; export it with 'medge export' "
                             "or 'medge ecg fit' so that its leads and sample rate are known")
    if meta.task != "ecg-reconstruction":
        raise ModelLoadError(f"{artifact.name} is a {meta.task} model; the ECG app needs an ecg-reconstruction "
                             "model such as ecg-3to12")
    return meta


def load_lead_model(ref: str, threads: int | None = None) -> tuple[LeadModel, ModelMeta, object]:
    """(`LeadModel`, metadata, open Runtime) for `ref`; close the runtime when done."""
    from medge.runtimes import open_runtime

    artifact = resolve_artifact(ref)
    meta = read_meta(artifact)
    pre = meta.preprocessing
    for key in ("leads", "sample_rate_hz", "samples"):
        if not pre.get(key):
            raise DataError(f"{artifact.name} metadata lacks preprocessing '{key}'; re-export the model")
    if str(pre.get("layout", "NCL")).upper() != "NCL":
        raise DataError(f"{artifact.name} wants layout {pre.get('layout')}; the ECG app feeds NCL (leads, samples)")
    runtime = open_runtime(artifact, threads=threads)
    in_name = runtime.inputs()[0].name
    out_name = runtime.outputs()[0].name

    def infer(x: np.ndarray) -> np.ndarray:
        return runtime.infer({in_name: x})[out_name]

    model = LeadModel(infer, tuple(pre["leads"]), tuple(meta.labels), float(pre["sample_rate_hz"]),
                      int(pre["samples"]), float(pre.get("scale", 1.0)),
                      bool(meta.extra.get(DERIVE_KEY, True)), artifact.name)
    return model, meta, runtime
