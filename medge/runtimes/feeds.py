"""Feed the same float data to any runtime: match inputs by position, fix NCHW↔NHWC layouts,
quantize int8 I/O, and bring outputs back to float32 in the reference layout.

Also makes seeded random inputs in a runtime's own dtype (never all-zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medge.errors import DataError
from medge.runtimes.artifacts import ArtifactRef
from medge.runtimes.base import TensorInfo, dequantize_output, quantize_input


def _concrete(shape: Sequence[int | str | None], batch: int = 1) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else (batch if i == 0 else 1) for i, d in enumerate(shape))


def _fits(shape: tuple[int, ...], want: Sequence[int | str | None]) -> bool:
    return len(shape) == len(want) and all(not isinstance(w, int) or w <= 0 or s == w for s, w in zip(shape, want))


def layout_permutation(shape: tuple[int, ...], want: Sequence[int | str | None]) -> tuple[int, ...] | None:
    """Axes permutation that turns an array of `shape` into the `want` layout: identity,
    channels-first → channels-last or the reverse; None when none fits."""
    n = len(shape)
    if n != len(want):
        return None
    candidates = [tuple(range(n))]
    if n >= 3:
        candidates += [(0, *range(2, n), 1), (0, n - 1, *range(1, n - 1))]
    for perm in candidates:
        if _fits(tuple(shape[p] for p in perm), want):
            return perm
    return None


def adapt_inputs(arrays: Sequence[np.ndarray], infos: Sequence[TensorInfo], who: str = "artifact") -> dict[str, np.ndarray]:
    """Map float arrays (reference order) onto a runtime's inputs: position, layout, dtype/quantization."""
    if len(arrays) != len(infos):
        raise DataError(f"{who} has {len(infos)} inputs but the data has {len(arrays)}; compare models with the same inputs")
    feeds = {}
    for arr, info in zip(arrays, infos):
        perm = layout_permutation(arr.shape, info.shape)
        if perm is None:
            raise DataError(
                f"{who}: input '{info.name}' expects shape {list(info.shape)}, the data has {list(arr.shape)} "
                "(no NCHW/NHWC transpose fits)"
            )
        feeds[info.name] = np.ascontiguousarray(quantize_input(np.transpose(arr, perm), info))
    return feeds


def restore_outputs(
    outputs: dict[str, np.ndarray], infos: Sequence[TensorInfo], ref_shapes: Sequence[tuple[int, ...]] | None = None
) -> list[np.ndarray]:
    """Outputs in artifact order as float32, transposed back to `ref_shapes` when the layout differs."""
    result = []
    for i, info in enumerate(infos):
        y = dequantize_output(outputs[info.name], info)
        if ref_shapes is not None and i < len(ref_shapes) and y.shape != tuple(ref_shapes[i]):
            perm = layout_permutation(y.shape, ref_shapes[i])
            if perm is not None:
                y = np.transpose(y, perm)
        result.append(y)
    return result


def random_inputs(infos: Sequence[TensorInfo], seed: int = 0, count: int = 1) -> list[dict[str, np.ndarray]]:
    """`count` seeded random feeds in each input's own dtype: standard normal floats, quantized
    normals for int8/uint8 I/O with (scale, zero_point), small random integers otherwise."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for info in infos:
            shape = _concrete(info.shape)
            dtype = np.dtype(info.dtype)
            if dtype.kind == "f":
                arr = rng.standard_normal(shape).astype(dtype)
            elif info.quantization is not None:
                arr = quantize_input(rng.standard_normal(shape), info)
            elif dtype.kind == "b":
                arr = rng.random(shape) > 0.5
            else:
                arr = rng.integers(1, 16, size=shape).astype(dtype)
            feed[info.name] = arr
        feeds.append(feed)
    return feeds


def load_source_inputs(
    source: str, ref: ArtifactRef, infos: Sequence[TensorInfo], n: int, *, split: str = "eval", seed: int = 0
) -> tuple[list[list[np.ndarray]], np.ndarray | None, dict]:
    """Read `n` model-ready samples from a calibration/eval source (folder, DICOM, WFDB, .npz,
    ``synthetic:<task>``) for the model behind `ref`.

    Returns the input arrays of each sample (model input order), the stacked targets (or None)
    and the data set's own report.
    """
    from medge.errors import MedgeError

    try:
        from medge.calibration import load_data, load_data_for_onnx
    except ImportError as exc:
        raise MedgeError("reading --inputs needs medge.calibration, which this installation lacks; drop --inputs") from exc
    if ref.onnx is not None:
        dataset = load_data_for_onnx(source, str(ref.onnx), n=n, split=split, seed=seed)
    elif len(infos) == 1:  # without metadata only model-ready .npy/.npz arrays are accepted
        dataset = load_data(source, ref.meta, input_name=infos[0].name, input_shape=_concrete(infos[0].shape), n=n, split=split, seed=seed)
    elif ref.meta is not None and (ref.meta.extra or {}).get("inputs"):  # a multi-input bundle: names from its metadata
        from medge.calibration.multi_input import GraphInput, load_multi_input

        declared = ref.meta.extra["inputs"]
        if len(declared) != len(infos):
            raise MedgeError(f"{ref.label} has {len(infos)} inputs but its metadata declares {len(declared)}")
        inputs = [GraphInput(d["name"], _concrete(info.shape), d.get("dtype", "float32")) for d, info in zip(declared, infos)]
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
