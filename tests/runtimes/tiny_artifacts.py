"""Tiny real artifacts for runtime, profile and compare tests, all from one small torch model.

`TinySegmenter` maps 1×1×16×16 → 1×2×16×16 probabilities (conv + sigmoid), so an NHWC export has
visibly different input *and* output layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_SHAPE = (1, 1, 16, 16)
OUTPUT_SHAPE = (1, 2, 16, 16)


def tiny_module(seed: int = 0):
    """The tiny conv net with seeded weights, in eval mode."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, padding=1), torch.nn.Sigmoid()
    ).eval()


def reference_output(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The torch model's own output (the ground truth every runtime must match)."""
    import torch

    with torch.no_grad():
        return tiny_module(seed)(torch.from_numpy(x)).numpy()


def export_onnx(path: Path, seed: int = 0) -> Path:
    """TorchScript ONNX export (opset 17), input 'image', output 'probs'."""
    import torch

    torch.onnx.export(
        tiny_module(seed), (torch.zeros(INPUT_SHAPE),), str(path), dynamo=False, opset_version=17,
        input_names=["image"], output_names=["probs"],
    )
    return path


def export_ir(onnx_path: Path, xml_path: Path) -> Path:
    """OpenVINO IR (FP32 weights) converted from the ONNX file."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def export_tflite(path: Path, seed: int = 0, channels_last: bool = False) -> Path:
    """LiteRT flatbuffer via litert-torch; NHWC input and output with `channels_last`."""
    import litert_torch
    import torch

    module = tiny_module(seed)
    sample = torch.zeros(INPUT_SHAPE)
    if channels_last:
        module = litert_torch.to_channel_last_io(module, args=[0], outputs=[0])
        sample = sample.permute(0, 2, 3, 1).contiguous()
    litert_torch.convert(module, (sample,)).export(str(path))
    return path


@dataclass(frozen=True)
class TinyArtifacts:
    """Paths of every artifact made from the tiny model (seed 0), plus a different model (seed 1)."""

    onnx: Path
    ir: Path
    tflite: Path
    tflite_nhwc: Path
    onnx_other: Path


def build_all(folder: Path) -> TinyArtifacts:
    """Write every tiny artifact into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(folder / "tiny.onnx")
    return TinyArtifacts(
        onnx=onnx_path,
        ir=export_ir(onnx_path, folder / "tiny.xml"),
        tflite=export_tflite(folder / "tiny.tflite"),
        tflite_nhwc=export_tflite(folder / "tiny_nhwc.tflite", channels_last=True),
        onnx_other=export_onnx(folder / "other.onnx", seed=1),
    )


def _cache_key() -> str:
    import hashlib
    from importlib.metadata import version

    h = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("torch", "onnx", "openvino", "litert-torch", "ai-edge-litert"):
        h.update(f"{dist}={version(dist)}".encode())
    return h.hexdigest()[:16]


def cached_build(cache_root: Path) -> TinyArtifacts:
    """`build_all` once per source/toolchain version under `cache_root`, shared by test sessions.

    The folder is built beside its final name and renamed into place, so a half-built cache is
    never used.
    """
    import os
    import shutil
    import tempfile

    final = cache_root / f"medge-tiny-{_cache_key()}"
    names = {"onnx": "tiny.onnx", "ir": "tiny.xml", "tflite": "tiny.tflite", "tflite_nhwc": "tiny_nhwc.tflite", "onnx_other": "other.onnx"}
    if not final.exists():
        tmp = Path(tempfile.mkdtemp(prefix=".medge-tiny-", dir=cache_root))
        try:
            build_all(tmp)
            os.replace(tmp, final)
        except OSError:
            if not final.exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return TinyArtifacts(**{field: final / name for field, name in names.items()})
