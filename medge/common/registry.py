"""One small generic registry for zoo models, quantization backends, runtimes and targets.

Entries are registered either directly (``@REG.register("name")``) or lazily by a
``"package.module:attr"`` reference, so that importing the registry never imports an optional
dependency.  A missing dependency surfaces as a `MissingDependencyError` only when that entry is
used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medge.common.errors import MissingDependencyError, UnknownNameError, did_you_mean

T = TypeVar("T")

# Optional top-level packages and the medge extra that installs each of them.
OPTIONAL_EXTRAS: dict[str, str] = {
    "openvino": "openvino",
    "nncf": "openvino",
    "ai_edge_litert": "litert",
    "litert_torch": "litert",
    "ai_edge_quantizer": "litert",
    "tensorrt": "tensorrt",
    "polygraphy": "tensorrt",
    "pydicom": "data",
    "wfdb": "data",
    "PIL": "data",
    "cv2": "opencv",
    "onnxruntime": "onnxruntime",
    "torch": "toolchain",
    "onnxscript": "toolchain",
    "safetensors": "toolchain",
    "monai": "toolchain",
    "einops": "toolchain",
    "pynetdicom": "apps",
    "highdicom": "apps",
    "serial": "apps",
    "cobs": "apps",
    "matplotlib": "apps",
    "torch_pruning": "prune",
    "neural_compressor": "inc",
}


def import_optional(module: str, *, what: str | None = None):
    """Import `module`, turning a missing optional package into a `MissingDependencyError`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = (exc.name or module).split(".")[0]
        extra = OPTIONAL_EXTRAS.get(top)
        if extra is None:
            raise
        raise MissingDependencyError(top, extra, what=what) from exc


def resolve_reference(ref: str):
    """Import and return the object named by ``"package.module:attr"``."""
    module_name, _, attr = ref.partition(":")
    module = import_optional(module_name)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Named entries of one kind, with lazy import and 'did you mean' suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """Register `obj` (or a lazy ``"module:attr"`` string) under `name`.

        Used without `obj` it is a decorator.  Duplicate names are rejected.
        """
        if obj is None:
            def decorator(target: T) -> T:
                self._add(name, target)
                return target

            return decorator
        self._add(name, obj)
        return obj

    def _add(self, name: str, obj: T | str) -> None:
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        """Return the entry called `name`, importing it if it was registered lazily."""
        if name not in self._entries:
            choices = ", ".join(sorted(self._entries))
            raise UnknownNameError(
                f"unknown {self.kind} '{name}';{did_you_mean(name, self._entries)} choices: {choices}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = resolve_reference(entry)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
