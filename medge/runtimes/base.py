"""One Runtime interface over ONNX Runtime, OpenVINO, LiteRT and TensorRT.

Backends implement only ``_load``, ``_io`` and ``_infer``; the public methods validate feeds and
time every call (modelled on Polygraphy's ``BaseRunner`` with ``*_impl`` methods).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.common.errors import DataError, MedgeError


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (None or a string for a dynamic dimension) and numpy dtype of one tensor."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str
    # Affine int8/uint8 quantization of this tensor, (scale, zero_point), when the artifact has one.
    quantization: tuple[float, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.quantization is not None:
            data["quantization"] = {"scale": self.quantization[0], "zero_point": self.quantization[1]}
        return data


def quantize_input(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Convert float data to `info`'s dtype: affine (scale, zero_point) rounding for int8/uint8 I/O,
    a plain cast otherwise."""
    dtype = np.dtype(info.dtype)
    if info.quantization is not None and np.issubdtype(dtype, np.integer):
        scale, zero_point = info.quantization
        limits = np.iinfo(dtype)
        q = np.round(np.asarray(x, dtype=np.float64) / scale) + zero_point
        return np.clip(q, limits.min, limits.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def dequantize_output(y: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Convert an output of `info`'s dtype back to float32 (affine dequantization for int8 I/O)."""
    if info.quantization is not None and np.issubdtype(np.asarray(y).dtype, np.integer):
        scale, zero_point = info.quantization
        return ((np.asarray(y, dtype=np.float32) - zero_point) * scale).astype(np.float32)
    return np.asarray(y, dtype=np.float32)


@dataclass
class Runtime(abc.ABC):
    """A loaded artifact that runs inference.  Use as a context manager."""

    # The Python package this backend runs on (imported lazily, e.g. before a memory baseline).
    library: ClassVar[str | None] = None

    name: str = "runtime"
    device: str = "cpu"
    threads: int | None = None
    load_ms: float = 0.0
    last_infer_ms: float = 0.0
    artifact: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    _inputs: list[TensorInfo] = field(default_factory=list, repr=False)
    _outputs: list[TensorInfo] = field(default_factory=list, repr=False)
    _loaded: bool = False

    # --- public API -------------------------------------------------------------------------
    def load(self, artifact: str | Path, device: str = "cpu", threads: int | None = None, **options: Any) -> "Runtime":
        """Load `artifact` for `device` with `threads` intra-op threads (None: runtime default)."""
        artifact = Path(artifact)
        if not artifact.exists():
            raise MedgeError(f"artifact not found: {artifact}")
        self.artifact, self.device, self.threads, self.options = artifact, device, threads, options
        t0 = time.perf_counter()
        self._load(artifact, device, threads, **options)
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self._inputs, self._outputs = self._io()
        self._loaded = True
        return self

    def inputs(self) -> list[TensorInfo]:
        """Input tensors in the artifact's order."""
        self._require_loaded()
        return list(self._inputs)

    def outputs(self) -> list[TensorInfo]:
        """Output tensors in the artifact's order."""
        self._require_loaded()
        return list(self._outputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; checks names, dtypes and ranks; times the call in `last_infer_ms`."""
        self._require_loaded()
        self._check_feeds(feeds)
        t0 = time.perf_counter()
        out = self._infer(feeds)
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        return out

    def layer_profile(self) -> list[dict[str, Any]]:
        """Per-layer timings from the last runs, where the runtime offers them ([] otherwise)."""
        return []

    def close(self) -> None:
        """Release the runtime's resources."""
        self._close()
        self._loaded = False

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- backend hooks ----------------------------------------------------------------------
    @abc.abstractmethod
    def _load(self, artifact: Path, device: str, threads: int | None, **options: Any) -> None: ...

    @abc.abstractmethod
    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]: ...

    @abc.abstractmethod
    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _close(self) -> None:
        pass

    # --- helpers ----------------------------------------------------------------------------
    def _require_loaded(self) -> None:
        if not self._loaded:
            raise RuntimeError(f"{self.name}: call load() first")

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {t.name: t for t in self._inputs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise DataError(
                f"{self.name}: feeds do not match the model inputs (missing {missing}, unexpected {extra}); "
                f"expected {sorted(expected)}"
            )
        for name, arr in feeds.items():
            info = expected[name]
            if not isinstance(arr, np.ndarray):
                raise DataError(f"{self.name}: input '{name}' must be a numpy array, got {type(arr).__name__}")
            if len(info.shape) and arr.ndim != len(info.shape):
                raise DataError(
                    f"{self.name}: input '{name}' has rank {arr.ndim}, the model expects rank {len(info.shape)} "
                    f"(shape {list(info.shape)})"
                )
            for got, want in zip(arr.shape, info.shape):
                if isinstance(want, int) and want > 0 and got != want:
                    raise DataError(
                        f"{self.name}: input '{name}' has shape {list(arr.shape)}, the model expects {list(info.shape)}"
                    )
            if str(arr.dtype) != info.dtype:
                raise DataError(f"{self.name}: input '{name}' has dtype {arr.dtype}, the model expects {info.dtype}")
