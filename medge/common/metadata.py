"""The model's own description, embedded in the ONNX file's ``metadata_props``.

Every key is prefixed ``medge.`` and every value is JSON.  Apps, calibration and quantization read
the preprocessing from here, so nothing downstream hard-codes it.

Preprocessing schema (``ModelMeta.preprocessing``):

* images: ``{"kind": "image", "modality": "CR"|"US"|..., "channels": 1, "height": H, "width": W,
  "layout": "NCHW", "intensity": "unit" (raw already in [0, 1]) | "uint8" (divide by 255) |
  "minmax" | "window", "window_center": float|None, "window_width": float|None,
  "mean": [..], "std": [..]}``; the pipeline is intensity → [0, 1], resize to H×W,
  then ``(x - mean) / std``.  ``"assumed": [fields]`` lists fields medge filled with its documented
  default (min–max, no mean/std) because the user declared none (`medge.export.declare`).
* signals: ``{"kind": "signal", "modality": "ECG", "leads": ["II", "V1", "V5"],
  "sample_rate_hz": 500, "samples": 5000, "units": "mV", "layout": "NCL", "scale": 1.0}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "medge."

TASKS = ("multilabel-classification", "classification", "segmentation", "ecg-reconstruction")
ASSUMED_NOTE = ("preprocessing assumed, not declared ({fields}): intensity min-max to [0, 1], resize to "
                "{h}x{w}, no mean/std; declare the real one at export with --preprocess/--like/--intensity/--mean/--std")


def assumed_note(pre: dict[str, Any] | None) -> str | None:
    """One line naming the preprocessing fields medge assumed (``pre["assumed"]``), or None when
    everything was declared (see `medge.export.declare`)."""
    assumed = pre.get("assumed") if isinstance(pre, dict) else None
    if not assumed:
        return None
    return ASSUMED_NOTE.format(fields=", ".join(assumed), h=pre.get("height", "?"), w=pre.get("width", "?"))


@dataclass
class ModelMeta:
    """What medge knows about a model beyond its graph."""

    model: str
    task: str
    labels: list[str]
    input_layout: str
    preprocessing: dict[str, Any]
    source_sha256: str = ""
    medge_version: str = ""
    output_names: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` key/value strings to embed."""
        return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMeta | None":
        """Parse ``metadata_props``; None when the file carries no medge metadata."""
        values = {k[len(PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
        if "task" not in values:
            return None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})


def embed_metadata(model, meta: ModelMeta) -> None:
    """Write `meta` into an ``onnx.ModelProto`` in place (replacing older medge keys)."""
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in sorted(meta.to_props().items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path_or_model) -> ModelMeta | None:
    """Read medge metadata from an ONNX path or ``onnx.ModelProto`` (no weights are loaded)."""
    import onnx

    model = path_or_model
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(path_or_model), load_external_data=False)
    return ModelMeta.from_props({p.key: p.value for p in model.metadata_props})


SIDECAR_SUFFIX = ".medge.json"


def sidecar_path(model_file) -> Path:
    """Where the metadata sidecar of a saved model file (e.g. a pruned ``.pt2``) lives."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + SIDECAR_SUFFIX)


def read_sidecar(model_file) -> ModelMeta | None:
    """The `ModelMeta` stored beside `model_file` (``<file>.medge.json``), or None when absent."""
    path = sidecar_path(model_file)
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    known = set(ModelMeta.__dataclass_fields__)
    return ModelMeta(**{k: v for k, v in values.items() if k in known})
