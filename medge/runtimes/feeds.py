"""Feed the same float data to any runtime: match inputs by position, fix NCHW↔NHWC layouts,
quantize int8 I/O, and bring outputs back to float32 in the reference layout.

Also makes seeded random inputs in a runtime's own dtype (never all-zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medge.common.errors import DataError
from medge.runtimes.base import TensorInfo, dequantize_output, quantize_input


def concrete_shape(shape: Sequence[int | str | None], batch: int = 1) -> tuple[int, ...]:
    """`shape` with every symbolic or unknown dimension fixed: the batch to `batch`, the others to 1."""
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
            shape = concrete_shape(info.shape)
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
