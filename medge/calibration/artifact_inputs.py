"""Model-ready samples from a calibration/evaluation source for an artifact that runs on any runtime
(`medge compare --inputs`, `medge profile --inputs`): the data side of `medge.runtimes.feeds`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medge.calibration.dataset import load_data, load_data_for_onnx
from medge.calibration.multi_input import GraphInput, load_multi_input
from medge.common.errors import DataError, MedgeError
from medge.runtimes.artifacts import ArtifactRef
from medge.runtimes.base import TensorInfo
from medge.runtimes.feeds import concrete_shape


def load_source_inputs(
    source: str, ref: ArtifactRef, infos: Sequence[TensorInfo], n: int, *, split: str = "eval", seed: int = 0
) -> tuple[list[list[np.ndarray]], np.ndarray | None, dict]:
    """Read `n` model-ready samples from a calibration/eval source (folder, DICOM, WFDB, .npz,
    ``synthetic:<task>``) for the model behind `ref`.

    Returns the input arrays of each sample (model input order), the stacked targets (or None)
    and the data set's own report.
    """
    if ref.onnx is not None:
        dataset = load_data_for_onnx(source, str(ref.onnx), n=n, split=split, seed=seed)
    elif len(infos) == 1:  # without metadata only model-ready .npy/.npz arrays are accepted
        dataset = load_data(source, ref.meta, input_name=infos[0].name, input_shape=concrete_shape(infos[0].shape), n=n, split=split, seed=seed)
    elif ref.meta is not None and (ref.meta.extra or {}).get("inputs"):  # a multi-input bundle: names from its metadata
        declared = ref.meta.extra["inputs"]
        if len(declared) != len(infos):
            raise MedgeError(f"{ref.label} has {len(infos)} inputs but its metadata declares {len(declared)}")
        inputs = [GraphInput(d["name"], concrete_shape(info.shape), d.get("dtype", "float32")) for d, info in zip(declared, infos)]
        dataset = load_multi_input(source, None, ref.meta, inputs, n=n, split=split, seed=seed)
    else:
        raise MedgeError(
            f"{ref.label} has {len(infos)} inputs and no ONNX model beside it, so --inputs cannot be mapped onto it; "
            "compare against the ONNX file or drop --inputs for random data"
        )
    samples = [list(feed.values()) for feed in dataset]
    if not samples:
        raise DataError(f"--inputs {source} gave no usable samples; check the source (see the data report)")
    report = getattr(dataset, "report", None)
    report_dict = report.to_dict() if hasattr(report, "to_dict") else (report if isinstance(report, dict) else {})
    return samples, dataset.targets(), report_dict
