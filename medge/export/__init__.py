"""PyTorch → ONNX export with parity checks and embedded medical metadata.

Public API (imported lazily so that ``import medge.common.metadata`` stays light):

* ``load_model(model, weights=None, model_kwargs=None, input_shape=None) -> LoadedModel``
* ``export_onnx(model, output, *, weights=None, model_kwargs=None, input_shape=None, opset=None,
  dynamic_batch=False, samples=None, atol=1e-4, rtol=1e-3, loaded=None) -> ExportReport``
* ``inspect_onnx(path) -> DictReport``
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LoadedModel": "medge.export.loading",
    "load_model": "medge.export.loading",
    "parse_shape": "medge.export.input_specs",
    "export_onnx": "medge.export.exporter",
    "ExportReport": "medge.export.report",
    "ParityResult": "medge.export.report",
    "inspect_onnx": "medge.export.inspect",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medge.export' has no attribute {name!r}")
