"""Resolve what the user points at (an artifact file or a bundle folder) to a file and a runtime.

A bundle is a folder with ``manifest.json`` naming its ``primary_artifact``, the ``runtime`` that
runs it and the runtime device (``runtime_device`` or ``device``).  Model metadata comes from the
ONNX file itself, an OpenVINO IR (which keeps the ONNX ``metadata_props`` under
``rt_info/framework``), an ONNX file inside the bundle, or a ``model_meta`` manifest entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medge.common.errors import BundleError, MedgeError
from medge.common.bundle import MANIFEST, load_manifest
from medge.common.metadata import ModelMeta
from medge.runtimes.model_file import FORMATS, open_model
from medge.runtimes import RUNTIMES, RUNTIME_FOR_SUFFIX


@dataclass(frozen=True)
class ArtifactRef:
    """One loadable artifact: its file, the runtime that opens it and what medge knows about it."""

    path: Path
    runtime: str
    device: str | None = None
    bundle: Path | None = None
    meta: ModelMeta | None = None
    onnx: Path | None = None  # the ONNX file that describes the model (itself, or one in the bundle)
    precision: str | None = None  # the bundle's precision (from its manifest); None for plain files

    @property
    def label(self) -> str:
        """The path the user gave (the bundle folder for bundles)."""
        return str(self.bundle or self.path)


def _file_meta(path: Path) -> ModelMeta | None:
    """Medge metadata of a model file opened by the one loader (None for engines and unknown files).

    An OpenVINO IR keeps the ONNX ``metadata_props`` under ``rt_info/framework``."""
    if path.suffix.lower() not in FORMATS:
        return None
    return open_model(path).meta


def _bundle_meta(bundle: Path, manifest: dict[str, Any], primary: Path) -> tuple[ModelMeta | None, Path | None]:
    if primary.suffix == ".onnx":
        return _file_meta(primary), primary
    own = _file_meta(primary)
    onnx_files = [bundle / rel for rel in sorted(manifest.get("files", {})) if rel.endswith(".onnx") and (bundle / rel).exists()]
    if own is not None:
        return own, (onnx_files or [None])[0]
    stored = manifest.get("model_meta")
    if isinstance(stored, dict) and "task" in stored:
        known = set(ModelMeta.__dataclass_fields__)
        return ModelMeta(**{k: v for k, v in stored.items() if k in known}), (onnx_files or [None])[0]
    for onnx_path in onnx_files:
        meta = _file_meta(onnx_path)
        if meta is not None:
            return meta, onnx_path
    return None, (onnx_files or [None])[0]


def resolve_artifact(path: str | Path, runtime: str | None = None) -> ArtifactRef:
    """Turn an artifact file or bundle folder into an `ArtifactRef` (runtime guessed from the suffix)."""
    path = Path(path)
    if not path.exists():
        raise MedgeError(f"artifact not found: {path}")
    if path.is_dir():
        if not (path / MANIFEST).exists():
            raise BundleError(f"{path} is a folder without {MANIFEST}; pass an artifact file or a medge bundle")
        manifest = load_manifest(path)
        rel = manifest.get("primary_artifact")
        if not rel:
            raise BundleError(f"{path / MANIFEST} names no primary_artifact; recompile the bundle")
        primary = path / rel
        if not primary.exists():
            raise BundleError(f"bundle {path.name}: primary artifact {rel} is missing; run 'medge verify {path}'")
        rt = runtime or manifest.get("runtime") or RUNTIME_FOR_SUFFIX.get(primary.suffix)
        if rt is None:
            raise MedgeError(f"bundle {path.name} names no runtime; pass --runtime ({', '.join(RUNTIMES.names())})")
        if rt not in RUNTIMES:
            RUNTIMES.get(rt)
        device = manifest.get("runtime_device") or manifest.get("device")
        meta, onnx_path = _bundle_meta(path, manifest, primary)
        artifact = primary
        if manifest.get("runtime") == "tensorrt" and primary.suffix == ".onnx":
            artifact, rt, device = _tensorrt_artifact(path, manifest, primary, runtime, device)
        return ArtifactRef(artifact, rt, device, path, meta, onnx_path, manifest.get("precision"))
    rt = runtime or RUNTIME_FOR_SUFFIX.get(path.suffix)
    if rt is None:
        raise MedgeError(f"cannot tell which runtime runs '{path.name}'; pass --runtime ({', '.join(RUNTIMES.names())})")
    if rt not in RUNTIMES:
        RUNTIMES.get(rt)  # raises UnknownNameError with a "did you mean"
    meta = _file_meta(path)
    return ArtifactRef(path, rt, None, None, meta, path if path.suffix == ".onnx" else None)


def _ort_gpu_device() -> str | None:
    """'tensorrt' or 'cuda' when this onnxruntime build has that execution provider, else None."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    available = set(ort.get_available_providers())
    if "TensorrtExecutionProvider" in available:
        return "tensorrt"
    return "cuda" if "CUDAExecutionProvider" in available else None


def _tensorrt_artifact(bundle: Path, manifest: dict[str, Any], primary: Path, runtime: str | None,
                       device: str | None) -> tuple[Path, str, str | None]:
    """What runs a TensorRT bundle, whose manifest names the ONNX the engine is built from.

    The engine built on the device (``extra.engine``, default ``device/model.engine``) once it exists;
    before that the ONNX through ONNX Runtime's TensorRT/CUDA execution provider when present, or the
    ONNX on this CPU when ``onnxruntime`` is asked for explicitly.  Otherwise a one-line error says to
    build the engine first.
    """
    engine_rel = (manifest.get("extra") or {}).get("engine") or "device/model.engine"
    engine = bundle / engine_rel
    if runtime == "onnxruntime":
        return primary, "onnxruntime", None
    if engine.is_file() and runtime in (None, "tensorrt"):
        return engine, "tensorrt", device
    if runtime is None:
        gpu = _ort_gpu_device()
        if gpu is not None:
            return primary, "onnxruntime", gpu
    raise BundleError(
        f"bundle {bundle.name} has no TensorRT engine yet ({engine_rel}): build the engine on the device first: "
        f"bash {bundle}/build_engine.sh; on this machine, run its {primary.name} on the CPU with "
        f"{bundle}@onnxruntime (compare) or --runtime onnxruntime (profile), or profile it on the device: "
        f"medge profile {bundle} --device ssh://USER@HOST"
    )


def artifact_size(ref: ArtifactRef) -> int:
    """Bytes on disk of the artifact (with an IR's .bin or an ONNX file's external data)."""
    size = ref.path.stat().st_size
    if ref.path.suffix == ".xml" and ref.path.with_suffix(".bin").exists():
        size += ref.path.with_suffix(".bin").stat().st_size
    if ref.path.suffix == ".onnx":
        external = ref.path.with_name(ref.path.name + ".data")
        if external.exists():
            size += external.stat().st_size
    return size
