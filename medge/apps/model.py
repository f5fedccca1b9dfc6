"""An app model: a bundle folder or artifact file opened through `medge.runtimes` with its metadata.

Preprocessing comes from the model's `ModelMeta` (`medge.calibration.preprocess`), so an app never
hard-codes sizes, channels or normalisation.  Feeds are mapped onto the artifact the same way
`medge compare` does: NCHW data is transposed for an NHWC artifact and quantized for int8 I/O;
outputs come back as float32 in the model's own (metadata) layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.common.errors import DataError, MedgeError
from medge.common.metadata import ModelMeta
from medge.runtimes.artifacts import ArtifactRef, resolve_artifact
from medge.apps.zoo_cache import resolve_app_model
from medge.calibration.preprocess import image_to_model, model_input_kind, signal_to_model
from medge.runtimes import open_runtime
from medge.runtimes.base import Runtime, TensorInfo, dequantize_output, quantize_input
from medge.runtimes.feeds import layout_permutation

BATCH_LIMIT = 8  # the largest batch an app runs through an artifact whose batch is dynamic

TASK_WORDS = {
    "segmentation": "a segmentation model",
    "classification": "a classifier",
    "multilabel-classification": "a multi-label classifier",
    "ecg-reconstruction": "an ECG lead-reconstruction model",
}


def _shape_text(shape: Sequence[Any]) -> str:
    return "×".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in shape)


@dataclass
class AppModel:
    """A loaded model ready for an app stage: `prepare` raw data, `run` it, or both via `predict`.

    Not thread-safe: use one AppModel from one stage thread.
    """

    ref: ArtifactRef
    runtime: Runtime
    meta: ModelMeta
    role: str
    input_info: TensorInfo
    input_shape: tuple[int, ...]  # model-layout (metadata) shape with batch 1, e.g. (1, 1, 256, 256)
    _perm: tuple[int, ...]

    # --- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, *, role: str = "model", expect_task: str | Sequence[str] | None = None,
             runtime: str | None = None, device: str | None = None, threads: int | None = None,
             input_size: tuple[int, int] | None = None, **options: Any) -> "AppModel":
        """Open `path` (bundle dir, .onnx, .xml or .tflite, or a zoo name: see `medge.apps.zoo_cache`)
        for the app role `role` (used in errors).

        `expect_task` names the accepted task(s) from the metadata; `input_size` (H, W) overrides
        the metadata size for artifacts with dynamic spatial dimensions.  Raises `MedgeError`s
        with one-line messages for a wrong task, missing metadata or a size the artifact cannot take.
        """
        ref = resolve_artifact(resolve_app_model(path, role), runtime)
        meta = ref.meta
        if meta is None:
            raise MedgeError(f"{role} {ref.label} carries no medge metadata (task, preprocessing); "
                             "export it with 'medge export' and compile it with 'medge compile'")
        if expect_task is not None:
            accepted = (expect_task,) if isinstance(expect_task, str) else tuple(expect_task)
            if meta.task not in accepted:
                want = " or ".join(TASK_WORDS.get(t, t) for t in accepted)
                raise MedgeError(f"{role} {ref.label} is {TASK_WORDS.get(meta.task, meta.task)} (task '{meta.task}'), "
                                 f"not {want}; pass a model whose task is {' or '.join(accepted)}")
        pre = dict(meta.preprocessing)
        kind = model_input_kind(pre)
        if input_size is not None:
            if kind != "image":
                raise MedgeError(f"{role} {ref.label} takes signals, so an input size does not apply")
            pre["height"], pre["width"] = int(input_size[0]), int(input_size[1])
        rt = open_runtime(ref.path, ref.runtime, device=device or ref.device or "cpu", threads=threads, **options)
        try:
            infos = rt.inputs()
            if len(infos) != 1:
                raise MedgeError(f"{role} {ref.label} has {len(infos)} inputs; apps run single-input models")
            shape = _model_shape(pre)

            perm = layout_permutation(shape, infos[0].shape)
            if perm is None:
                size = f"{pre['height']}×{pre['width']}" if kind == "image" else f"{pre['samples']} samples"
                raise MedgeError(f"{role} {ref.label} cannot take a {size} input: the artifact's input is "
                                 f"{_shape_text(infos[0].shape)} (model layout {_shape_text(shape)}); "
                                 "use the size it was compiled for or re-export and recompile at the size you want")
        except BaseException:
            rt.close()
            raise
        meta = ModelMeta(**{**meta.__dict__, "preprocessing": pre})
        return cls(ref, rt, meta, role, infos[0], shape, perm)

    # --- running --------------------------------------------------------------------------------
    @property
    def preprocessing(self) -> dict[str, Any]:
        """The model's preprocessing block (schema in `medge.common.metadata`)."""
        return self.meta.preprocessing

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of an image model's input."""
        return int(self.preprocessing["height"]), int(self.preprocessing["width"])

    def prepare(self, data: np.ndarray) -> np.ndarray:
        """Model-layout float32 input with batch 1 from an image in [0, 1] ((H, W) or (H, W, C))
        or a signal in mV at the model's rate ((leads, samples))."""
        pre = self.preprocessing
        x = image_to_model(data, pre) if pre["kind"] == "image" else signal_to_model(data, pre)
        return x[None]

    @property
    def max_batch(self) -> int:
        """The largest batch `run` takes: 1 for an artifact with a fixed batch of 1, else `BATCH_LIMIT`
        (or the artifact's fixed batch)."""
        batch = self.input_info.shape[0] if self.input_info.shape else 1
        return BATCH_LIMIT if batch is None or not isinstance(batch, int) else int(batch)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run a prepared input (batch 1, or up to `max_batch`); float32 outputs in the model's layout
        (artifact order)."""
        if x.shape[1:] != self.input_shape[1:] or not 1 <= x.shape[0] <= self.max_batch:
            want = list(self.input_shape) if self.max_batch == 1 else ["N", *self.input_shape[1:]]
            raise DataError(f"{self.role}: input has shape {list(x.shape)}, expected {want}")
        feed = np.ascontiguousarray(quantize_input(np.transpose(x, self._perm), self.input_info))
        outputs = self.runtime.infer({self.input_info.name: feed})
        inverse = tuple(int(i) for i in np.argsort(self._perm))
        result = []
        for info in self.runtime.outputs():
            y = dequantize_output(outputs[info.name], info)
            if inverse != tuple(range(len(inverse))) and y.ndim == len(inverse):
                y = np.transpose(y, inverse)
            result.append(y)
        return result

    def predict(self, data: np.ndarray) -> list[np.ndarray]:
        """`prepare` then `run`."""
        return self.run(self.prepare(data))

    @property
    def last_infer_ms(self) -> float:
        """Milliseconds of the last `run` inside the runtime."""
        return float(self.runtime.last_infer_ms)

    def describe(self) -> dict[str, Any]:
        """``{"artifact", "runtime", "device", "task", "model", "input"}`` for reports (no paths of data)."""
        return {"artifact": self.ref.label, "runtime": self.ref.runtime, "device": self.runtime.device,
                "task": self.meta.task, "model": self.meta.model, "input": list(self.input_shape),
                "artifact_input": self.input_info.to_dict()}

    def close(self) -> None:
        """Release the runtime."""
        self.runtime.close()

    def __enter__(self) -> "AppModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _model_shape(pre: dict[str, Any]) -> tuple[int, ...]:
    if pre["kind"] == "image":
        c, h, w = int(pre.get("channels", 1)), int(pre["height"]), int(pre["width"])
        return (1, h, w, c) if str(pre.get("layout", "NCHW")).upper() == "NHWC" else (1, c, h, w)
    leads, samples = len(pre.get("leads", [])) or 1, int(pre["samples"])
    return (1, samples, leads) if str(pre.get("layout", "NCL")).upper() == "NLC" else (1, leads, samples)


def classifier_threshold(meta: ModelMeta, default: float = 0.5) -> float:
    """The decision threshold a classifier's metadata carries (``extra.threshold`` or
    ``extra.thresholds[label]``), else `default`."""
    extra = meta.extra or {}
    if isinstance(extra.get("threshold"), (int, float)):
        return float(extra["threshold"])
    thresholds = extra.get("thresholds")
    if isinstance(thresholds, dict) and meta.labels and isinstance(thresholds.get(meta.labels[0]), (int, float)):
        return float(thresholds[meta.labels[0]])
    return default
