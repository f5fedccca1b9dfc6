"""`medge inspect`: what an ONNX file holds — medge metadata, I/O, ops, parameters and MACs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from medge.errors import DataError
from medge.fileio import sha256_file
from medge.reports import DictReport


def _preprocessing_status(meta) -> str:
    """'declared', 'assumed: <fields>' (medge's documented default filled them) or 'none'."""
    from medge.metadata import assumed_note

    pre = meta.preprocessing if meta is not None else None
    if not pre:
        return "none"
    note = assumed_note(pre)
    return f"assumed: {note}" if note else "declared"


def inspect_onnx(path: str | Path) -> DictReport:
    """Read an ONNX file (external data included) and summarise it; DataError if it is not ONNX."""
    import onnx

    from medge.metadata import ModelMeta
    from medge.export.onnx_stats import graph_summary

    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - protobuf/onnx raise many types for bad files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path} is not a valid ONNX model ({first[:200]}); export one with 'medge export'") from None
    props = {p.key: p.value for p in model.metadata_props}
    try:
        meta = ModelMeta.from_props(props)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path} has unreadable medge metadata ({exc}); re-export it with 'medge export'") from None
    data = {
        "path": str(path),
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "metadata": asdict(meta) if meta else None,
        "preprocessing_status": _preprocessing_status(meta),
        "other_metadata": {k: v for k, v in props.items() if not k.startswith("medge.")},
        **graph_summary(model),
    }
    return DictReport(name=f"inspect {path.name}", data=data)
