"""The cell key: what a cell's result depends on, hashed, so that `--resume` can trust an old row.

It covers the model source and weights, the calibration/evaluation data, the cell's parameters and
the versions of medge and the toolkits.  Timeout, retries and thread count are left out: they
change how a cell runs, not what it builds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from medge.common.errors import UsageError
from medge.common.fileio import sha256_file
from medge.scale.spec import Cell
from medge import __version__
from medge.zoo import MODELS, weights_path

TOOLKITS = ("torch", "onnx", "onnxruntime", "onnxslim", "openvino", "nncf", "ai-edge-litert", "ai-edge-quantizer",
            "litert-torch", "tensorrt", "torch-pruning", "neural-compressor-pt")


@lru_cache(maxsize=None)
def toolkit_versions() -> dict[str, str]:
    """medge's version and the installed version of every toolkit a build may use."""
    versions = {"medge": __version__}
    for name in TOOLKITS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


@lru_cache(maxsize=None)
def path_hash(path: str) -> str:
    """sha256 of a file, or of a folder's relative names and file hashes (sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def _module_file(module: str, where: str) -> str:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise UsageError(f"{where}: cannot find module '{module}' ({exc}); check the model's module:factory") from None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise UsageError(f"{where}: cannot find module '{module}'; check the model's module:factory and PYTHONPATH")
    return spec.origin


@lru_cache(maxsize=None)
def model_hash(source: str, weights: str | None) -> str:
    """sha256 of what defines a model: its source file (zoo factory, module or .pt2/.onnx) and weights."""
    h = hashlib.sha256()
    if source in MODELS:
        card = MODELS.get(source)
        h.update(path_hash(_module_file(card.factory.split(":")[0], source)).encode())
        h.update(json.dumps(card.factory_kwargs, sort_keys=True, default=str).encode())
        shipped = weights_path(card)
        if shipped is not None and shipped.exists():
            h.update(path_hash(str(shipped)).encode())
    elif Path(source).is_file():
        h.update(path_hash(source).encode())
    else:
        h.update(path_hash(_module_file(source.split(":")[0], source)).encode())
    if weights:
        h.update(path_hash(weights).encode())
    return h.hexdigest()


def _data_hash(source: str | None) -> str | None:
    if not source or not Path(source).exists():
        return source  # synthetic[:task] or the zoo default: the name is the data
    return path_hash(source)


def cell_key(cell: Cell) -> str:
    """A 16-hex-digit key of everything that decides a cell's result."""
    params: dict[str, Any] = {k: v for k, v in cell.to_dict().items()
                              if k not in ("timeout_s", "retries", "threads", "on_farm")}
    if cell.on_farm:  # where the latency was measured is part of the result (without --farm, keys are unchanged)
        params["on_farm"] = True
    doc = {"params": params, "model": model_hash(cell.source, cell.weights), "calib": _data_hash(cell.calib),
           "eval": _data_hash(cell.eval), "versions": toolkit_versions()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]
