"""Calibration/evaluation data for models with several inputs (e.g. image + click prompt).

Only the image input (the model's first input) is drawn from a folder, DICOM or synthetic
source; the other inputs take the defaults declared at export (``extra["inputs"][i]["default"]``,
zeros when none was declared, said in the data report).  An ``.npz`` with one array per input name
gives every input, model-ready, with optional targets under ``targets``/``masks``/``labels``/``y``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medge.calibration.arrays import TARGET_KEYS
from medge.calibration.dataset import DataReport, DataSet, Sample, load_data
from medge.common.errors import DataError
from medge.common.metadata import ModelMeta

ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool", 11: "float64"}


@dataclass(frozen=True)
class GraphInput:
    """One ONNX graph input with a static batch-1 shape."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def graph_inputs(onnx_path: str | Path) -> list[GraphInput]:
    """The real (non-initializer) inputs of an ONNX file, dynamic batch fixed to 1."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor.shape.dim)
        out.append(GraphInput(value.name, dims, ONNX_DTYPES.get(tensor.elem_type, "float32")))
    return out


def _defaults(meta: ModelMeta | None) -> dict[str, Any]:
    declared = (meta.extra or {}).get("inputs") if meta is not None else None
    return {i["name"]: i.get("default") for i in (declared or []) if isinstance(i, dict) and "name" in i}


def default_feed(inp: GraphInput, meta: ModelMeta | None) -> tuple[np.ndarray, bool]:
    """(batch-1 array for `inp` from its declared default, whether a default was declared)."""
    value = _defaults(meta).get(inp.name)
    if value is None:
        return np.zeros(inp.shape, dtype=inp.dtype), False
    try:
        arr = np.broadcast_to(np.asarray(value, dtype=inp.dtype), inp.shape[1:])[None]
    except ValueError:
        raise DataError(f"the declared default of input '{inp.name}' does not fit its shape {list(inp.shape)}; "
                        "re-export with a fitting --input-default") from None
    return np.ascontiguousarray(arr), True


def _key(feeds: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(feeds):
        h.update(name.encode())
        h.update(np.ascontiguousarray(feeds[name]).tobytes())
    return h.hexdigest()


def _named_npz(path: Path, inputs: list[GraphInput], meta: ModelMeta | None, n: int, split: str,
               seed: int) -> DataSet:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {i.name: npz[i.name] for i in inputs}
        target_key = next((k for k in TARGET_KEYS if k in npz), None)
        targets = npz[target_key] if target_key else None
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1 or (targets is not None and len(targets) not in counts):
        raise DataError(f"{path.name}: arrays have different lengths ({ {k: len(v) for k, v in arrays.items()} }); "
                        "give one row per sample for every input")
    total = counts.pop()
    order = np.random.default_rng([seed, 0 if split == "calib" else 1]).permutation(total)[:n]
    samples = []
    for row in sorted(int(i) for i in order):
        feeds = {}
        for inp in inputs:
            arr = np.asarray(arrays[inp.name][row], dtype=inp.dtype)
            if arr.shape != inp.shape[1:]:
                raise DataError(f"{path.name}: '{inp.name}' rows have shape {arr.shape}; input '{inp.name}' wants "
                                f"{inp.shape[1:]} (model-ready values)")
            feeds[inp.name] = np.ascontiguousarray(arr[None])
        target = None if targets is None else np.asarray(targets[row])
        samples.append(Sample(feeds, target, _key(feeds), f"{path.name}[{row}]"))
    report = DataReport(source=str(path), kind="arrays", split=split, seed=seed, requested=n, found=total,
                        used=len(samples), labels_from="arrays" if targets is not None else None,
                        input_name=inputs[0].name, input_shape=list(inputs[0].shape),
                        notes=[f"one array per input: {', '.join(i.name for i in inputs)}"])
    dataset = DataSet(samples, report)
    report.sha256 = dataset.sha256
    return dataset


def load_multi_input(source: str, onnx_path: str | Path | None, meta: ModelMeta | None, inputs: list[GraphInput], *,
                     n: int, split: str, seed: int) -> DataSet:
    """Samples with every input of a multi-input model filled (see the module docstring).

    `inputs` are the model's inputs in order (the image first); `onnx_path` is informative only."""
    path = Path(source).expanduser()
    if path.suffix.lower() == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
        if all(i.name in keys for i in inputs):
            return _named_npz(path, inputs, meta, n, split, seed)
        if not any(i.name in keys for i in inputs[1:]) and "inputs" not in keys and "x" not in keys:
            raise DataError(f"{path.name} has arrays {sorted(keys)}; a model with inputs "
                            f"{', '.join(i.name for i in inputs)} needs one array per input name")
    image = inputs[0]
    dataset = load_data(source, meta, input_name=image.name, input_shape=image.shape, n=n, split=split, seed=seed)
    filled = []
    for other in inputs[1:]:
        value, declared = default_feed(other, meta)
        filled.append((other.name, value))
        dataset.report.notes.append(
            f"input '{other.name}' fed its declared default" if declared else
            f"input '{other.name}' has no declared default: fed zeros (declare one with --input-default or pass an .npz)")
    for sample in dataset.samples:
        sample.feeds.update({name: value.copy() for name, value in filled})
        sample.key = _key(sample.feeds)
    dataset.report.sha256 = dataset.sha256
    return dataset
