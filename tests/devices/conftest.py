"""Tiny ONNX models with medge metadata for the device/compile tests (built in code, no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_checks import tiny_meta


def export_tiny_cnn(path: Path, *, dynamic_batch: bool = False, opset: int = 13) -> Path:
    """A small conv net (1×1×64×64 → 4 sigmoid probabilities) exported with the TorchScript exporter."""
    import onnx
    import torch
    from torch import nn

    from medge.common.metadata import embed_metadata

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 4), nn.Sigmoid(),
    ).eval()
    tmp = path.with_suffix(".raw.onnx")
    torch.onnx.export(
        net, (torch.zeros(1, 1, 64, 64),), str(tmp), input_names=["image"], output_names=["probs"],
        opset_version=opset, dynamo=False, dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}} if dynamic_batch else None,
    )
    model = onnx.load(str(tmp))
    tmp.unlink()
    embed_metadata(model, tiny_meta())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """Static-shape tiny CNN with medge metadata."""
    return export_tiny_cnn(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_onnx_dynamic(tmp_path_factory) -> Path:
    """Dynamic-batch tiny CNN with medge metadata."""
    return export_tiny_cnn(tmp_path_factory.mktemp("models") / "tiny_dyn.onnx", dynamic_batch=True)


@pytest.fixture
def medge_meta():
    """A `ModelMeta` matching the tiny CNN (1×1×64×64 CR image, 4 findings)."""
    return tiny_meta()
