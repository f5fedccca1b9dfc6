"""Zoo names for the apps (``--model ecg-3to12``, ``--segmenter us-lesion-unet``): the cached ONNX export.

A zoo model is exported once to ONNX into the user cache (``$XDG_CACHE_HOME/medge/apps/NAME.onnx``).
On a device without torch the cached file is used when it is there; otherwise one line says how to
get it (export it on the workstation, or install the toolchain extra).  Never a traceback.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from medge.common.errors import MedgeError
from medge.export import export_onnx
from medge.zoo import MODELS

# What `medge export` of a zoo model imports beyond the core.
_EXPORT_NEEDS = ("torch", "onnxscript", "safetensors")


def cache_dir() -> Path:
    """Where the apps keep zoo models exported to ONNX."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medge" / "apps"


def is_zoo_name(ref: str | os.PathLike) -> bool:
    """True when `ref` is a bare zoo name (not an existing path, no suffix, no folder)."""
    text = str(ref)
    if Path(text).exists() or Path(text).suffix or "/" in text:
        return False

    return text in MODELS.names()


def _cannot_export(name: str, role: str, missing: str) -> MedgeError:
    cached = cache_dir() / f"{name}.onnx"
    return MedgeError(
        f"{role} {name} is a zoo model that is exported to ONNX on first use, which needs {missing} (not installed here); "
        f"export it on the workstation (medge export {name} -o {name}.onnx) and pass that file, or copy it to {cached}, "
        "or install the toolchain: pip install 'medge[toolchain]'")


def zoo_onnx(name: str, role: str = "--model") -> Path:
    """The cached ONNX of zoo model `name`, exported on first use when the toolchain is installed."""
    target = cache_dir() / f"{name}.onnx"
    if target.is_file():
        return target
    missing = [module for module in _EXPORT_NEEDS if importlib.util.find_spec(module) is None]
    if missing:
        raise _cannot_export(name, role, " and ".join(missing))

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        export_onnx(name, target)
    except ImportError as exc:  # a zoo architecture's own optional package (e.g. monai)
        raise _cannot_export(name, role, exc.name or str(exc)) from exc
    return target


def resolve_app_model(ref: str | os.PathLike, role: str = "--model") -> str | os.PathLike:
    """`ref` itself, or the cached ONNX when `ref` is a bare zoo name."""
    return zoo_onnx(str(ref), role) if is_zoo_name(ref) else ref
