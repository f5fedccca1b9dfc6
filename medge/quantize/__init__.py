"""INT8/FP16 quantization with clinical accuracy gates and FP32 fallback.

`quantize_model(QuantizeConfig) -> QuantizeReport` is the entry point; backends live in the lazy
registry `BACKENDS` (``ort``, ``openvino``, ``inc``), so importing this package pulls in neither
onnxruntime nor OpenVINO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medge.quantize.config import CALIB_METHODS, PRECISIONS, QuantizeConfig
from medge.common.registry import Registry

if TYPE_CHECKING:
    from medge.quantize.backends.base import QuantBackend
    from medge.quantize.report import QuantizeReport

BACKENDS: Registry[type["QuantBackend"]] = Registry("quantization backend")
BACKENDS.register("ort", "medge.quantize.backends.ort:OrtBackend")
BACKENDS.register("openvino", "medge.quantize.backends.openvino:OpenVinoBackend")
BACKENDS.register("inc", "medge.quantize.backends.inc:IncBackend")


def quantize_model(config: QuantizeConfig) -> "QuantizeReport":
    """Quantize an ONNX model as `config` says; see `medge.quantize.gate.quantize_model`."""
    from medge.quantize.gate import quantize_model as _run

    return _run(config)


__all__ = ["BACKENDS", "CALIB_METHODS", "PRECISIONS", "QuantizeConfig", "quantize_model"]
