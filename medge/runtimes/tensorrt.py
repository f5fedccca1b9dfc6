"""TensorRT backend: deserializes a ``.engine``/``.plan`` and runs it with ``execute_async_v3``.

Device buffers are torch CUDA tensors (torch is a medge dependency, so no extra CUDA binding is
needed).  Engines are built for one GPU and TensorRT version; build them on the device with
`medge compile`.  Options: ``profiling=True`` attaches an ``IProfiler`` for `layer_profile`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.common.errors import MedgeError
from medge.common.registry import import_optional
from medge.runtimes.base import Runtime, TensorInfo


def _make_profiler(trt: Any) -> Any:
    class LayerTimes(trt.IProfiler):
        """Collects per-layer times reported by TensorRT after every execution."""

        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.rows: dict[str, dict[str, Any]] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            row = self.rows.setdefault(layer_name, {"name": layer_name, "op": "", "calls": 0, "total_us": 0.0})
            row["calls"] += 1
            row["total_us"] += ms * 1e3

    return LayerTimes()


@dataclass
class TensorRtRuntime(Runtime):
    """A serialized TensorRT engine with one execution context on the current CUDA device."""

    library: ClassVar[str | None] = "tensorrt"
    name: str = "tensorrt"
    _engine: Any = None
    _context: Any = None
    _profiler: Any = None
    _torch: Any = None
    _trt: Any = None

    def _load(self, artifact: Path, device: str, threads: int | None, **options: Any) -> None:
        trt = import_optional("tensorrt", what="the tensorrt runtime")
        import torch

        if not torch.cuda.is_available():
            raise MedgeError("tensorrt: no CUDA GPU is visible to torch; run on a Jetson/NVIDIA machine with a CUDA build of torch")
        if device.lower() not in ("cpu", "gpu", "cuda", "tensorrt") and not device.lower().startswith("cuda:"):
            raise MedgeError(f"tensorrt: unknown device '{device}'; use cuda or cuda:N")
        if device.lower().startswith("cuda:"):
            torch.cuda.set_device(int(device.split(":", 1)[1]))
        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(artifact.read_bytes())
        if self._engine is None:
            raise MedgeError(
                f"tensorrt cannot deserialize {artifact.name}: it was built for another TensorRT version or GPU; "
                "rebuild it on this device with 'medge compile'"
            )
        self._context = self._engine.create_execution_context()
        if options.get("profiling"):
            self._profiler = _make_profiler(trt)
            self._context.profiler = self._profiler
        self._trt = trt

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        trt, engine = self._trt, self._engine
        ins, outs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) if d >= 0 else None for d in engine.get_tensor_shape(name))
            info = TensorInfo(name, shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name)
            (ins if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outs).append(info)
        return ins, outs

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch, ctx = self._torch, self._context
        keep = []
        for name, arr in feeds.items():
            ctx.set_input_shape(name, tuple(arr.shape))
            dev = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
            keep.append(dev)
            ctx.set_tensor_address(name, dev.data_ptr())
        outs = {}
        for info in self._outputs:
            shape = tuple(ctx.get_tensor_shape(info.name))
            dev = torch.empty(shape, dtype=getattr(torch, info.dtype), device="cuda")
            outs[info.name] = dev
            ctx.set_tensor_address(info.name, dev.data_ptr())
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise MedgeError("tensorrt: execute_async_v3 failed (see the TensorRT log above)")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outs.items()}

    def layer_profile(self) -> list[dict[str, Any]]:
        """Per-layer times reported by TensorRT's profiler; [] unless ``profiling=True``."""
        if self._profiler is None:
            return []
        rows = [dict(r, mean_us=r["total_us"] / max(r["calls"], 1)) for r in self._profiler.rows.values()]
        return sorted(rows, key=lambda r: r["total_us"], reverse=True)

    def _close(self) -> None:
        self._context = None
        self._engine = None
