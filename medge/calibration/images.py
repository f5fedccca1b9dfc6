"""Folders of images (PNG/JPEG/TIFF/BMP) and/or DICOM files, with optional labels.

Labels come from a CSV (the source itself when it ends in ``.csv``, or ``labels.csv`` inside the
folder) or from class subfolders (``root/<label>/...``) when every subfolder name is one of the
model's labels or a negative word such as ``normal``.  The CSV is either ``file,label[,label...]``
(label names; an empty list or ``none`` means no finding) or, with a header
``file,<label1>,<label2>,...`` naming the model's labels, one 0/1 column per label.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from medge.calibration.dicom import dicom_candidates, looks_like_dicom
from medge.calibration.labels import class_names, encode_names, labels_usable, name_is_known, stratum_of
from medge.calibration.preprocess import image_to_model, raw_to_unit
from medge.calibration.sampling import Candidate, SkipSample, error_detail
from medge.common.errors import DataError
from medge.common.metadata import ModelMeta
from medge.common.registry import import_optional

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
LABELS_CSV = "labels.csv"
HEADER_FIRST_CELLS = frozenset({"file", "filename", "path", "image", "file_name"})


def read_image_unit(path: Path, pre: dict[str, Any]) -> np.ndarray:
    """Decode an image file (first page of a TIFF) to (H, W) or (H, W, C) intensities in [0, 1]."""
    image_mod = import_optional("PIL.Image", what="reading image folders")
    try:
        with image_mod.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode in ("LA", "PA"):
                img = img.convert("L")
            elif mode == "CMYK":
                img = img.convert("RGB")
            arr = np.array(img)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise SkipSample(f"cannot decode image ({error_detail(exc, path)})") from exc
    if mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return raw_to_unit(arr, pre)


def _image_candidate(path: Path, item: str, pre: dict[str, Any], target, stratum) -> Candidate:
    def load() -> tuple[np.ndarray, np.ndarray | None]:
        return image_to_model(read_image_unit(path, pre), pre), None

    return Candidate(item, load, target, stratum)


def _is_data_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and (
        path.suffix.lower() in IMAGE_SUFFIXES or looks_like_dicom(path))


def _read_csv_labels(csv_path: Path, meta: ModelMeta | None) -> list[tuple[str, list[str]]]:
    """(relative file, label names) rows of a labels CSV."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [[c.strip() for c in row] for row in csv.reader(f) if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read labels CSV {csv_path.name}: {exc}; write it as file,label[,label...]") from exc
    if not rows:
        raise DataError(f"labels CSV {csv_path} is empty; write one line per image: file,label[,label...]")
    header = rows[0] if rows[0][0].lower() in HEADER_FIRST_CELLS else None
    body = rows[1:] if header else rows
    matrix = bool(header and meta and len(header) > 1 and all(name_is_known(h, meta) for h in header[1:])
                  and meta.task == "multilabel-classification")
    out: list[tuple[str, list[str]]] = []
    for row in body:
        if matrix:
            names = []
            for name, value in zip(header[1:], row[1:]):
                try:
                    if value and float(value) > 0.5:
                        names.append(name)
                except ValueError as exc:
                    raise DataError(f"labels CSV {csv_path.name}: value '{value}' for {name} is not 0/1") from exc
            out.append((row[0], names))
        else:
            out.append((row[0], row[1:]))
    return out


def _subfolder_labels(root: Path, files: list[Path], meta: ModelMeta | None) -> dict[Path, list[str]] | None:
    """Labels from class subfolders, or None when the folder layout is not class folders."""
    if not labels_usable(meta):
        return None
    tops = set()
    for f in files:
        rel = f.relative_to(root)
        if len(rel.parts) < 2:  # a file directly in the root: not a class-folder layout
            return None
        tops.add(rel.parts[0])
    if not tops or not all(name_is_known(t, meta) for t in tops):
        return None
    return {f: [f.relative_to(root).parts[0]] for f in files}


def folder_candidates(source: Path, meta: ModelMeta | None, pre: dict[str, Any], *,
                      max_frames: int | None = None) -> tuple[list[Candidate], list[tuple[str, str]], str | None]:
    """Candidates in an image/DICOM folder, a single file, or the files listed in a CSV.

    Returns ``(candidates, skipped (item, reason), labels_from)`` with ``labels_from`` one of
    ``"csv"``, ``"subfolders"`` or None.
    """
    skipped: list[tuple[str, str]] = []
    labelled: dict[Path, list[str]] | None = None
    labels_from: str | None = None
    if source.is_file() and source.suffix.lower() == ".csv":
        root, csv_path = source.parent, source
    elif source.is_dir():
        root, csv_path = source, (source / LABELS_CSV if (source / LABELS_CSV).is_file() else None)
    else:
        root, csv_path = source.parent, None

    if csv_path is not None:
        labelled, labels_from = {}, "csv"
        for name, names in _read_csv_labels(csv_path, meta):
            path = (root / name)
            if not path.is_file():
                skipped.append((name, f"listed in {csv_path.name} but not found"))
                continue
            labelled[path] = names
        files = list(labelled)
    elif source.is_dir():
        files = sorted(p for p in source.rglob("*") if _is_data_file(p))
        labelled = _subfolder_labels(root, files, meta)
        labels_from = "subfolders" if labelled else None
    else:
        files = [source]
    if labelled is not None and not labels_usable(meta):
        labelled, labels_from = None, None  # labels mean nothing to this model (segmentation, ECG)

    candidates: list[Candidate] = []
    for path in files:
        item = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        target = None
        if labelled is not None:
            target = encode_names(labelled[path], meta, where=f"{labels_from} label of {item}")
        stratum = stratum_of(class_names(target, meta))
        if looks_like_dicom(path):
            try:
                candidates += dicom_candidates(path, item, pre, target, stratum, max_frames=max_frames)
            except SkipSample as exc:
                skipped.append((item, str(exc)))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            candidates.append(_image_candidate(path, item, pre, target, stratum))
        else:
            skipped.append((item, f"not an image or DICOM file (suffix '{path.suffix}')"))
    return candidates, skipped, labels_from
