"""LiteRT (TensorFlow Lite) backend on the ``ai_edge_litert`` interpreter.

XNNPACK is LiteRT's default CPU delegate: the interpreter applies it unless the ``xnnpack=False``
option asks for the plain built-in kernels.  `xnnpack_active` reports whether a ``DELEGATE`` node
really appeared in the execution plan.  Int8/uint8 I/O keeps the model's dtype; `TensorInfo`
carries the (scale, zero_point) so callers can use `quantize_input`/`dequantize_output`.
Tensors appear in the model's own layout (often NHWC).  The Python interpreter has no per-op
profiler, so `layer_profile()` is always [].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.common.errors import MedgeError
from medge.common.registry import import_optional
from medge.runtimes.base import Runtime, TensorInfo


def _info(detail: dict[str, Any]) -> TensorInfo:
    signature = detail.get("shape_signature", detail["shape"])
    shape = tuple(int(d) if d >= 0 else None for d in signature)
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quant = (float(scale), int(zero_point)) if scale else None
    return TensorInfo(detail["name"], shape, np.dtype(detail["dtype"]).name, quant)


@dataclass
class LiteRtRuntime(Runtime):
    """A .tflite model in a LiteRT ``Interpreter``."""

    library: ClassVar[str | None] = "ai_edge_litert.interpreter"
    name: str = "litert"
    xnnpack_active: bool = False
    _interp: Any = None
    _in_index: dict[str, int] | None = None
    _out_index: dict[str, int] | None = None

    def _load(self, artifact: Path, device: str, threads: int | None, **options: Any) -> None:
        if device.lower() != "cpu":
            raise MedgeError(f"litert: device '{device}' is not supported by the Python interpreter; use --runtime-device cpu")
        mod = import_optional("ai_edge_litert.interpreter", what="the litert runtime")
        resolver = mod.OpResolverType.AUTO
        if options.get("xnnpack", True) is False:
            resolver = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._interp = mod.Interpreter(model_path=str(artifact), num_threads=threads, experimental_op_resolver_type=resolver)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise MedgeError(f"litert cannot load {artifact.name}: {str(exc).strip().splitlines()[0]}") from exc
        ops = self._interp._get_ops_details()
        self.xnnpack_active = any(op.get("op_name") == "DELEGATE" for op in ops)

    def _io(self) -> tuple[list[TensorInfo], list[TensorInfo]]:
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        self._in_index = {d["name"]: d["index"] for d in ins}
        self._out_index = {d["name"]: d["index"] for d in outs}
        return [_info(d) for d in ins], [_info(d) for d in outs]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        in_index, out_index = self._in_index or {}, self._out_index or {}
        for name, arr in feeds.items():
            self._interp.set_tensor(in_index[name], np.ascontiguousarray(arr))
        self._interp.invoke()
        return {name: np.array(self._interp.get_tensor(idx)) for name, idx in out_index.items()}

    def _close(self) -> None:
        self._interp = None
