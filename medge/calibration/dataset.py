"""Calibration/evaluation data sets: any source → model-ready samples, with a report.

`load_data` turns a folder (images/DICOM, labels from subfolders or a CSV), a DICOM file, a WFDB
record or folder, an .npy/.npz file or ``synthetic[:<task>]`` into a `DataSet`: an iterable of
``{input_name: float32 array with batch dim 1}`` that every quantization backend consumes.  The
model's own preprocessing (ONNX metadata) is applied, samples are drawn deterministically and
stratified by class, and every sample is keyed by the sha256 of its preprocessed bytes so that
calibration and evaluation sets can be checked for overlap (`check_overlap`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medge.calibration.labels import class_names
from medge.calibration.preprocess import model_input_kind
from medge.calibration.sampling import Candidate, draw
from medge.common.errors import DataError
from medge.common.metadata import ModelMeta, read_metadata
from medge.common.reports import Report

DEFAULT_SAMPLES = 300
MAX_LISTED_SKIPS = 50
SOURCE_HELP = "a folder of images/DICOM, a DICOM file, a WFDB record or folder, an .npy/.npz file or synthetic:<task>"


@dataclass
class Sample:
    """One model-ready sample."""

    feeds: dict[str, np.ndarray]  # float32, batch dim 1
    target: np.ndarray | None
    key: str  # sha256 of the preprocessed input bytes
    source: str  # where it came from, relative to the source root (never patient identifiers)


@dataclass
class DataReport(Report):
    """What a data source held and what was used from it."""

    title: ClassVar[str] = "data"
    source: str = ""
    kind: str = ""  # folder | dicom | wfdb | arrays | synthetic
    split: str = "calib"
    seed: int = 0
    requested: int = DEFAULT_SAMPLES
    found: int = 0
    used: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_items: list[dict[str, str]] = field(default_factory=list)  # first MAX_LISTED_SKIPS
    stratified: bool = False
    labels_from: str | None = None  # csv | subfolders | masks | arrays | synthetic | None
    class_counts: dict[str, int] | None = None
    input_name: str = ""
    input_shape: list[int] = field(default_factory=list)
    synthetic_task: str | None = None
    notes: list[str] = field(default_factory=list)
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.used > 0


class DataSet:
    """Model-ready samples: iterate it to get ``{input_name: array}`` feeds (batch dim 1)."""

    def __init__(self, samples: list[Sample], report: DataReport) -> None:
        self.samples = samples
        self.report = report

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return (s.feeds for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def input_name(self) -> str:
        """The model input every feed fills."""
        return self.report.input_name

    @property
    def sha256(self) -> str:
        """Identifies the set: sha256 over the sample keys, in order."""
        return set_sha256([s.key for s in self.samples])

    def targets(self) -> np.ndarray | None:
        """Targets stacked along a new first axis, or None when any sample has none."""
        if not self.samples or any(s.target is None for s in self.samples):
            return None
        return np.stack([np.asarray(s.target) for s in self.samples])

    def inputs(self) -> np.ndarray:
        """All inputs concatenated along the batch axis: (len, *input_shape[1:])."""
        return np.concatenate([s.feeds[self.input_name] for s in self.samples], axis=0)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Feeds (every input) with up to `batch_size` samples stacked along the batch axis."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        for start in range(0, len(self.samples), batch_size):
            chunk = self.samples[start:start + batch_size]
            yield {name: np.concatenate([s.feeds[name] for s in chunk], axis=0) for name in chunk[0].feeds}

    def as_list(self) -> list[dict[str, np.ndarray]]:
        """The feeds as a list (e.g. for NNCF's ``Dataset`` or an ORT calibration reader)."""
        return [s.feeds for s in self.samples]


def set_sha256(keys: list[str]) -> str:
    """sha256 over sample keys in order (the identity of a data set in bundle manifests)."""
    h = hashlib.sha256()
    for key in keys:
        h.update(key.encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def _source_kind(source: str, path: Path, input_kind: str) -> str:
    from medge.calibration.wfdb_source import is_wfdb_source

    if source == "synthetic" or source.startswith("synthetic:"):
        return "synthetic"
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        return "arrays"
    if not path.exists() and not Path(f"{path}.hea").is_file():
        raise DataError(f"data source '{source}' does not exist; pass {SOURCE_HELP}")
    if input_kind == "signal":
        if is_wfdb_source(path):
            return "wfdb"
        raise DataError(f"'{source}' holds no WFDB records (.hea/.dat) for this ECG model; pass a WFDB record "
                        "or folder, an .npz of (n, leads, samples) signals, or synthetic:ecg")
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in (".hea", ".dat") or Path(f"{path}.hea").is_file():
        raise DataError(f"'{source}' is a WFDB signal record but this model takes images; pass images or DICOM")
    from medge.calibration.dicom import looks_like_dicom

    return "dicom" if looks_like_dicom(path) else "folder"


def _root_of(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def load_data(source: str, meta: ModelMeta | None, *, input_name: str, input_shape: tuple[int, ...],
              n: int = DEFAULT_SAMPLES, split: str = "calib", seed: int = 0,
              max_frames_per_file: int | None = 16) -> DataSet:
    """Load `n` model-ready samples from `source`, applying the model's preprocessing.

    `source` is a folder (images/DICOM; labels from class subfolders or ``labels.csv``; for a
    segmentation model, ``images/`` + ``masks/`` subfolders give mask targets), a CSV
    ``file,label[,label...]``, a DICOM file, a WFDB record or folder, an .npy/.npz file, or
    ``synthetic[:<task>]``.  Sampling is seeded and stratified by class when labels exist;
    `split` selects disjoint synthetic streams (``calib``/``eval``).  A multi-frame DICOM gives at
    most `max_frames_per_file` evenly spaced frames (None: all).  Raises `DataError` for a
    missing/empty source or when no sample can be decoded.
    """
    source = str(source)
    if n < 1:
        raise DataError(f"sample count must be >= 1 (got {n})")
    if split not in ("calib", "eval"):
        raise DataError(f"unknown split '{split}'; expected calib or eval")
    pre = meta.preprocessing if meta is not None and meta.preprocessing else None
    input_kind = model_input_kind(pre) if pre else None
    path = Path(source).expanduser()
    kind = _source_kind(source, path, input_kind or "image")
    if pre is None and kind != "arrays":
        raise DataError(f"the model has no medge preprocessing metadata, so '{source}' cannot be prepared for it; "
                        "declare it at export (medge export ... --preprocess FILE|JSON, --like ZOO_NAME or "
                        "--intensity/--mean/--std; signals: --leads/--sample-rate) or pass model-ready inputs as .npy/.npz")
    report = DataReport(source=source, kind=kind, split=split, seed=seed, requested=n,
                        input_name=input_name, input_shape=[int(d) for d in input_shape])
    skipped: list[tuple[str, str]] = []
    candidates: list[Candidate]
    if kind == "synthetic":
        from medge.calibration.synthetic_source import synthetic_candidates

        candidates, report.synthetic_task, report.labels_from, report.notes = synthetic_candidates(
            source, meta, pre, kind=input_kind, n=n, seed=seed, split=split)
    elif kind == "arrays":
        from medge.calibration.arrays import array_candidates

        candidates, report.labels_from = array_candidates(path, meta, pre, tuple(input_shape), kind=input_kind)
    elif kind == "wfdb":
        from medge.calibration.wfdb_source import wfdb_candidates

        candidates, skipped = wfdb_candidates(path, meta, pre, root=_root_of(path))
    else:
        from medge.calibration.images import folder_candidates
        from medge.calibration.masks import paired_mask_candidates

        found = paired_mask_candidates(path, meta, pre, max_frames=max_frames_per_file) if path.is_dir() else None
        if found is None:
            found = folder_candidates(path, meta, pre, max_frames=max_frames_per_file)
        candidates, skipped, report.labels_from = found

    if not candidates:
        why = f" ({len(skipped)} unusable, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no usable samples found in '{source}'{why}; pass {SOURCE_HELP}")
    report.found = len(candidates) + len(skipped)  # skips so far were found but unusable before decoding
    drawn, report.stratified = draw(candidates, n, seed, lambda item, reason: skipped.append((item, reason)))
    _record_skips(report, skipped)
    if not drawn:
        item, reason = skipped[0]
        raise DataError(f"no decodable samples in '{source}': all {len(skipped)} tried were skipped "
                        f"(e.g. {item}: {reason}); check the files or pass another source")

    samples = []
    want = tuple(int(d) for d in input_shape[1:])
    for d in drawn:
        arr = np.ascontiguousarray(d.inputs, dtype=np.float32)
        if arr.shape != want:
            raise DataError(f"preprocessed sample has shape {arr.shape} but model input '{input_name}' is "
                            f"{tuple(input_shape)}; the model's preprocessing metadata disagrees with its input "
                            "(re-export it with medge export)")
        samples.append(Sample({input_name: arr[None]}, d.target, hashlib.sha256(arr.tobytes()).hexdigest(),
                              d.candidate.item))
    report.used = len(samples)
    if report.used < n:
        report.notes.append(f"only {report.used} usable samples for the {n} requested")
    report.class_counts = _class_counts(samples, meta)
    dataset = DataSet(samples, report)
    report.sha256 = dataset.sha256
    return dataset


def _record_skips(report: DataReport, skipped: list[tuple[str, str]]) -> None:
    report.skipped = len(skipped)
    report.skipped_by_reason = dict(Counter(_reason_kind(r) for _, r in skipped).most_common())
    report.skipped_items = [{"item": i, "reason": r} for i, r in skipped[:MAX_LISTED_SKIPS]]


def _reason_kind(reason: str) -> str:
    """The reason without per-file details (text in parentheses), to group skips."""
    return reason.split(" (", 1)[0]


def _class_counts(samples: list[Sample], meta: ModelMeta | None) -> dict[str, int] | None:
    counts: Counter[str] = Counter()
    for s in samples:
        names = class_names(s.target, meta)
        if names is None:
            return None
        counts.update(names)
    return dict(sorted(counts.items()))


def check_overlap(calib: DataSet, eval: DataSet, allow: bool = False) -> int:  # noqa: A002 - contract name
    """Number of evaluation samples whose preprocessed input also appears in the calibration set.

    Raises `DataError` when there is any overlap, unless `allow` is True.
    """
    calib_items = {s.key: s.source for s in calib.samples}
    shared = [(s.source, calib_items[s.key]) for s in eval.samples if s.key in calib_items]
    if shared and not allow:
        eval_item, calib_item = shared[0]
        raise DataError(f"calibration and evaluation data share {len(shared)} of {len(eval)} samples "
                        f"(e.g. eval {eval_item} = calib {calib_item}); use separate data or pass --allow-overlap")
    return len(shared)


def onnx_input(onnx_path: str | Path, meta: ModelMeta | None) -> tuple[str, tuple[int, ...]]:
    """Name and static shape (batch 1) of the ONNX model's first real input."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - missing/corrupt file
        raise DataError(f"cannot read ONNX model '{onnx_path}' ({type(exc).__name__}); pass a valid .onnx file") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs:
        raise DataError(f"ONNX model '{onnx_path}' has no inputs")
    first = inputs[0]
    pre = (meta.preprocessing if meta else None) or {}
    fallback = _shape_from_preprocessing(pre)
    shape = []
    for axis, dim in enumerate(first.type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            shape.append(int(dim.dim_value))
        elif axis == 0:
            shape.append(1)
        elif fallback and axis < len(fallback):
            shape.append(fallback[axis])
        else:
            raise DataError(f"input '{first.name}' of '{onnx_path}' has a dynamic axis {axis} and no medge "
                            "preprocessing metadata to fix it; export with a static input shape")
    return first.name, tuple(shape)


def _shape_from_preprocessing(pre: dict[str, Any]) -> tuple[int, ...] | None:
    if pre.get("kind") == "image" and pre.get("height"):
        c, h, w = int(pre.get("channels", 1)), int(pre["height"]), int(pre["width"])
        return (1, h, w, c) if str(pre.get("layout", "NCHW")).upper() == "NHWC" else (1, c, h, w)
    if pre.get("kind") == "signal" and pre.get("samples"):
        leads, samples = len(pre.get("leads", [])), int(pre["samples"])
        return (1, samples, leads) if str(pre.get("layout", "NCL")).upper() == "NLC" else (1, leads, samples)
    return None


def load_data_for_onnx(source: str, onnx_path: str | Path, n: int = DEFAULT_SAMPLES, split: str = "calib",
                       seed: int = 0) -> DataSet:
    """`load_data` with the metadata, input name and input shape read from an ONNX file."""
    if not Path(onnx_path).is_file():
        raise DataError(f"ONNX model '{onnx_path}' does not exist; export it first with medge export")
    try:
        meta = read_metadata(onnx_path)
    except Exception as exc:  # noqa: BLE001 - corrupt file or metadata
        raise DataError(f"cannot read medge metadata from '{onnx_path}' ({type(exc).__name__}); re-export it") from exc
    from medge.calibration.multi_input import graph_inputs, load_multi_input

    inputs = graph_inputs(onnx_path)
    if len(inputs) > 1:
        return load_multi_input(source, onnx_path, meta, inputs, n=n, split=split, seed=seed)
    name, shape = onnx_input(onnx_path, meta)
    return load_data(source, meta, input_name=name, input_shape=shape, n=n, split=split, seed=seed)
