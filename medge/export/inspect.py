"""`medge inspect`: what an ONNX file holds — medge metadata, I/O, ops, parameters and MACs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from medge.common.fileio import sha256_file
from medge.common.reports import DictReport
from medge.common.bundle import MANIFEST, load_manifest
from medge.common.metadata import assumed_note
from medge.export.onnx_stats import graph_summary


def _preprocessing_status(meta) -> str:
    """'declared', 'assumed: <fields>' (medge's documented default filled them) or 'none'."""
    pre = meta.preprocessing if meta is not None else None
    if not pre:
        return "none"
    note = assumed_note(pre)
    return f"assumed: {note}" if note else "declared"


def inspect_onnx(path: str | Path) -> DictReport:
    """Read an ONNX file (external data included) and summarise it; ModelLoadError if it is not valid ONNX."""
    from medge.runtimes.model_file import open_onnx

    path = Path(path)
    opened = open_onnx(path, external_data=True)
    model, meta = opened.proto, opened.meta
    props = {p.key: p.value for p in model.metadata_props}
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


def inspect_ir(path: str | Path) -> DictReport:
    """Summarise an OpenVINO IR (.xml + .bin) from its XML: medge metadata, inputs/outputs, op histogram."""
    import xml.etree.ElementTree as ET
    from collections import Counter

    from medge.runtimes.artifacts import ArtifactRef, artifact_size, resolve_artifact

    path = Path(path)
    ref: ArtifactRef = resolve_artifact(path, "openvino")  # the one loader checks the IR first
    root = ET.parse(path).getroot()
    layers = root.findall("layers/layer")

    def tensor(layer) -> dict:
        data = layer.find("data")
        shape = (data.get("shape", "") if data is not None else "").split(",")
        return {"name": layer.get("name"), "shape": [int(d) if d.strip().lstrip("-").isdigit() else None for d in shape if d],
                "dtype": data.get("element_type") if data is not None else None}

    ops = Counter(layer.get("type") for layer in layers)
    data = {
        "path": str(path),
        "format": "openvino-ir",
        "sha256": sha256_file(path),
        "size_bytes": artifact_size(ref),
        "metadata": asdict(ref.meta) if ref.meta else None,
        "inputs": [tensor(layer) for layer in layers if layer.get("type") == "Parameter"],
        "outputs": [{"name": layer.get("name")} for layer in layers if layer.get("type") == "Result"],
        "op_histogram": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "nodes": len(layers),
    }
    return DictReport(name=f"inspect {path.name}", data=data)


def inspect_bundle(path: str | Path) -> DictReport:
    """Summarise a bundle: target, precision, primary artifact, manifest sha256, and its model's ONNX summary."""
    path = Path(path)
    manifest = load_manifest(path)
    onnx_files = sorted(rel for rel in manifest["files"] if rel.endswith(".onnx"))
    summary = {
        "bundle": str(path),
        "target": (manifest.get("target") or {}).get("name"),
        "precision": manifest.get("precision"),
        "primary_artifact": manifest.get("primary_artifact"),
        "runtime": manifest.get("runtime"),
        "manifest_sha256": sha256_file(path / MANIFEST),
        "files": len(manifest["files"]),
        "model_meta": manifest.get("model_meta"),
    }
    primary = manifest.get("primary_artifact") or ""
    inner = path / primary if primary.endswith((".onnx", ".xml")) else (path / onnx_files[0] if onnx_files else None)
    if inner is not None and inner.is_file():
        detail = inspect_ir(inner) if inner.suffix == ".xml" else inspect_onnx(inner)
        summary["artifact"] = detail.data
    return DictReport(name=f"inspect bundle {path.name}", data=summary)


def inspect_path(path: str | Path) -> DictReport:
    """`medge inspect` of an ONNX file, an OpenVINO .xml or a bundle folder."""
    path = Path(path)
    if path.is_dir():
        return inspect_bundle(path)
    if path.suffix.lower() == ".xml" and path.is_file():
        return inspect_ir(path)
    return inspect_onnx(path)
