"""Tiny real models for quantization tests, exported with the TorchScript ONNX exporter.

`export_tiny(kind, path)` writes an FP32 ONNX file with medge metadata and returns its
`ModelMeta`; `write_eval_npz` writes model-ready inputs with targets derived from the FP32
model's own outputs (so the reference metric is known and any quantization damage shows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medge.common.metadata import ModelMeta, embed_metadata

SIZE = 64


class ConvClassifier(nn.Module):
    """Small conv net → one sigmoid probability.  `outlier` adds a huge constant channel; `masked`
    pools with an attention whose scores hold -inf for masked positions (as causal masks do)."""

    def __init__(self, outlier: float = 0.0, masked: bool = False) -> None:
        super().__init__()
        self.masked = masked
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Linear(64, 1)
        if outlier:
            with torch.no_grad():
                # channel 0 of conv1 becomes a near-constant huge activation: a uint8 range over
                # [0, outlier] wipes out every other channel sharing that tensor's scale
                self.conv1.weight[0].zero_()
                self.conv1.bias[0] = outlier
                self.conv2.weight[:, 0].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        if self.masked:
            tokens = x.flatten(2)  # (B, 64, 256)
            mask = torch.zeros(tokens.shape[-1]).masked_fill(torch.arange(tokens.shape[-1]) % 2 == 1, float("-inf"))
            weights = torch.softmax(tokens.mean(dim=1) + mask, dim=-1)
            return torch.sigmoid(self.head((tokens * weights[:, None]).sum(-1)) * 4.0)
        x = x.mean(dim=(2, 3))
        return torch.sigmoid(self.head(x) * 4.0)


def _meta(name: str) -> ModelMeta:
    return ModelMeta(
        model=name, task="classification", labels=["finding"], input_layout="NCHW",
        preprocessing={"kind": "image", "modality": "US", "channels": 1, "height": SIZE, "width": SIZE,
                       "layout": "NCHW", "intensity": "unit", "window_center": None, "window_width": None,
                       "mean": [0.5], "std": [0.25]},
        output_names=["prob"],
    )


def export_tiny(path: Path, *, outlier: float = 0.0, masked: bool = False, seed: int = 0) -> Path:
    """Export a `ConvClassifier` to `path` (ONNX opset 17, metadata embedded)."""
    import onnx

    torch.manual_seed(seed)
    module = ConvClassifier(outlier, masked).eval()
    dummy = torch.zeros(1, 1, SIZE, SIZE)
    torch.onnx.export(module, (dummy,), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["prob"])
    model = onnx.load(str(path))
    embed_metadata(model, _meta("tiny-outlier" if outlier else "tiny-conv"))
    onnx.save(model, str(path))
    return path


def write_npz(onnx_path: Path, out: Path, n: int, seed: int) -> Path:
    """Model-ready inputs + targets = FP32 prob above its median (reference AUROC 1.0)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    blobs = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3)
        img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) + rng.normal(0, 0.1, (SIZE, SIZE))
        blobs.append(((img - 0.5) / 0.25).astype(np.float32))
    inputs = np.stack(blobs)[:, None]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probs = np.concatenate([sess.run(None, {"image": x[None]})[0] for x in inputs]).ravel()
    targets = (probs > np.median(probs)).astype(np.float32)
    np.savez(out, inputs=inputs, targets=targets, preprocessed=True)
    return out
