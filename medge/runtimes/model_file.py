"""The one loader of model files: every command opens a user's model through `open_model`.

It reads an ONNX file (decode + ``onnx.checker``), an OpenVINO IR (.xml parses, its .bin is there),
a LiteRT flatbuffer (.tflite identifier) or a PyTorch ExportedProgram (.pt2: a zip whose members
pass their CRC), and turns every I/O, decode and checker failure into one `ModelLoadError` line
that names the file, what is wrong with it and what to do.  Bundles resolve to their primary
artifact in `medge.runtimes.artifacts.resolve_artifact`, which opens that file here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medge.common.errors import ModelLoadError
from medge.common.metadata import ModelMeta

# File suffix → format name.
FORMATS = {".onnx": "onnx", ".xml": "openvino-ir", ".tflite": "tflite", ".pt2": "exported-program"}
_REMAKE = {
    "onnx": "re-export it with 'medge export', or copy it again if it was cut short",
    "openvino-ir": "convert the model again with 'medge compile'",
    "tflite": "convert the model again with 'medge compile'",
    "exported-program": "save it again with torch.export.save or 'medge prune'",
}
_MAX_DETAIL = 200
_NAMES = {"onnx": "ONNX", "openvino-ir": "OpenVINO IR", "tflite": "TFLite", "exported-program": "ExportedProgram (.pt2)"}


@dataclass(frozen=True)
class ModelFile:
    """A model file that opened cleanly: its format, the ONNX proto (ONNX only) and medge metadata."""

    path: Path
    format: str
    proto: Any = None  # onnx.ModelProto for ONNX files (external data only when asked for)
    meta: ModelMeta | None = None


def _one_line(text: str) -> str:
    """`text` with its whitespace runs collapsed, cut to a readable length."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= _MAX_DETAIL else flat[: _MAX_DETAIL - 1] + "…"


def _fail(path: Path, fmt: str, problem: str) -> ModelLoadError:
    return ModelLoadError(f"{path} is not a valid {_NAMES[fmt]} model: {problem}; {_REMAKE[fmt]}")



def _read_bytes(path: Path, fmt: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{path} is a folder, not a model file; pass the {_NAMES[fmt]} file itself") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if not data:
        raise _fail(path, fmt, "the file is empty (0 bytes)")
    return data


def _looks_like_text(data: bytes) -> bool:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _meta(path: Path, fmt: str, props: dict[str, str]) -> ModelMeta | None:
    try:
        return ModelMeta.from_props(props)
    except (ValueError, TypeError) as exc:
        raise _fail(path, fmt, f"its medge metadata does not parse ({_one_line(str(exc))})") from None


def _has_external_data(model: Any) -> bool:
    import onnx

    return any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer)


def _check(model: Any, path: Path, external: bool) -> None:
    """``onnx.checker`` on `model`, which would also demand a shape on every graph input and output
    tensor: the ONNX IR lets a shape be absent (rank unknown) and ONNX Runtime runs such models, so
    those get an empty shape for the check only.  A model with external data is checked from its path
    (the checker then finds those files beside it), without that allowance."""
    import onnx

    if external:
        onnx.checker.check_model(str(path))
        return
    unshaped = [vi for vi in (*model.graph.input, *model.graph.output)
                if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")]
    for vi in unshaped:
        vi.type.tensor_type.shape.SetInParent()
    try:
        onnx.checker.check_model(model)
    finally:
        for vi in unshaped:
            vi.type.tensor_type.ClearField("shape")


def _open_onnx(path: Path, external_data: bool, check: bool) -> ModelFile:
    import onnx
    from google.protobuf.message import DecodeError

    data = _read_bytes(path, "onnx")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        what = "it is a text file, not a protobuf" if _looks_like_text(data) else \
            f"its protobuf does not decode ({_one_line(str(exc)).rpartition(': ')[2] or 'corrupt'}: a truncated or damaged file)"
        raise _fail(path, "onnx", what) from None
    external = _has_external_data(model)
    if check:
        try:
            _check(model, path, external)
        except (onnx.checker.ValidationError, ValueError, OSError) as exc:
            raise _fail(path, "onnx", f"the ONNX checker rejects it ({_one_line(str(exc))})") from None
    if external and external_data:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise _fail(path, "onnx", f"its external data cannot be read ({_one_line(str(exc))})") from None
    return ModelFile(path, "onnx", model, _meta(path, "onnx", {p.key: p.value for p in model.metadata_props}))


def _open_ir(path: Path) -> ModelFile:
    import xml.etree.ElementTree as ET

    data = _read_bytes(path, "openvino-ir")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise _fail(path, "openvino-ir", f"the XML does not parse ({exc})") from None
    if root.tag != "net" or not root.findall("layers/layer"):
        raise _fail(path, "openvino-ir", "it has no <net><layers>")
    if root.find("layers/layer[@type='Const']") is not None and not path.with_suffix(".bin").is_file():
        raise _fail(path, "openvino-ir", f"its weights file {path.with_suffix('.bin').name} is missing")
    framework = root.find("rt_info/framework")
    meta = None
    if framework is not None:
        try:
            meta = ModelMeta.from_props({el.tag: el.get("value", "") for el in framework})
        except (ValueError, TypeError):  # metadata written by something other than medge
            meta = None
    return ModelFile(path, "openvino-ir", None, meta)


def _open_tflite(path: Path) -> ModelFile:
    data = _read_bytes(path, "tflite")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise _fail(path, "tflite", "it does not start with the TFL3 flatbuffer identifier")
    root = int.from_bytes(data[:4], "little")
    if root >= len(data):
        raise _fail(path, "tflite", "its root table lies past the end of the file (truncated)")
    return ModelFile(path, "tflite")


def _open_pt2(path: Path) -> ModelFile:
    import zipfile

    _read_bytes(path, "exported-program")  # missing, unreadable or empty
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _fail(path, "exported-program", f"it is not a readable zip archive ({_one_line(str(exc))})") from None
    if bad is not None:
        raise _fail(path, "exported-program", f"its member {bad} fails its CRC check (corrupted)")
    return ModelFile(path, "exported-program")


def open_model(path: str | Path, *, external_data: bool = False, check: bool = True) -> ModelFile:
    """Open the model file at `path` (.onnx, .xml, .tflite or .pt2), or raise a one-line `ModelLoadError`.

    `external_data` also loads an ONNX file's external tensors; `check` runs ``onnx.checker`` on it.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ModelLoadError(f"{path.name}: unknown model file type '{path.suffix}'; "
                             f"medge opens {', '.join(FORMATS)} files and bundle folders")
    if fmt == "onnx":
        return _open_onnx(path, external_data, check)
    if fmt == "openvino-ir":
        return _open_ir(path)
    if fmt == "tflite":
        return _open_tflite(path)
    return _open_pt2(path)


def artifact_problems(path: str | Path) -> list[str]:
    """[] when `open_model` opens `path` (or its format is not a model format), else its one-line error.

    `medge verify` passes this to `common.bundle.verify_bundle`: a manifest may record the hash of a
    corrupt file."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        return []
    try:
        open_model(path)
    except ModelLoadError as exc:
        return [str(exc)]
    return []


def open_onnx(path: str | Path, *, external_data: bool = False, check: bool = True) -> ModelFile:
    """`open_model` for a file that must be ONNX (a one-line error names any other suffix)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ModelLoadError(f"'{path.name}' is not an .onnx file; export the model first with 'medge export'")
    return _open_onnx(path, external_data, check)


def load_onnx(path: str | Path, *, external_data: bool = False, check: bool = True) -> Any:
    """The ``onnx.ModelProto`` of the ONNX file at `path`, through the one loader."""
    return open_onnx(path, external_data=external_data, check=check).proto
