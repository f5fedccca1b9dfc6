"""One Runtime interface over onnxruntime / openvino / litert / tensorrt."""

from __future__ import annotations

from medge.common.registry import Registry
from medge.runtimes.base import Runtime, TensorInfo
from medge.common.errors import MedgeError

RUNTIMES: Registry[type[Runtime]] = Registry("runtime")
RUNTIMES.register("onnxruntime", "medge.runtimes.ort:OrtRuntime")
RUNTIMES.register("openvino", "medge.runtimes.openvino:OpenVinoRuntime")
RUNTIMES.register("litert", "medge.runtimes.litert:LiteRtRuntime")
RUNTIMES.register("tensorrt", "medge.runtimes.tensorrt:TensorRtRuntime")

# Which runtime opens which artifact, by file suffix.
RUNTIME_FOR_SUFFIX = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "litert", ".engine": "tensorrt", ".plan": "tensorrt"}


def open_runtime(artifact, runtime: str | None = None, device: str = "cpu", threads: int | None = None, **options) -> Runtime:
    """Load `artifact` with `runtime` (guessed from the suffix when None) and return the Runtime."""
    from pathlib import Path

    path = Path(artifact)
    if runtime is None:
        runtime = RUNTIME_FOR_SUFFIX.get(path.suffix)
        if runtime is None:
            raise MedgeError(
                f"cannot tell which runtime runs '{path.name}'; pass --runtime with one of {', '.join(RUNTIMES.names())}"
            )
    cls = RUNTIMES.get(runtime)
    rt = cls(name=runtime)
    return rt.load(path, device=device, threads=threads, **options)


__all__ = ["RUNTIMES", "RUNTIME_FOR_SUFFIX", "Runtime", "TensorInfo", "open_runtime"]
