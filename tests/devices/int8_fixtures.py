"""A model built to saturate ORT's u8s8 kernels on AVX2 without VNNI, given to the CLI as
``int8_fixtures:saturating_net`` (tests/devices on PYTHONPATH).

Its first conv makes large, all-positive activations (uint8 codes near 255 after ReLU) and its
second conv has large, all-positive weights in every channel (int8 codes up to 127): two u8×s8
products then sum to up to 255·127·2 = 64770, past int16 (32767), the `vpmaddubsw` limit.
"""

from __future__ import annotations

import torch
from torch import nn


class SaturatingNet(nn.Module):
    """Conv(1→16) → ReLU → Conv(16→8) → ReLU → 1×1 Conv(8→4), large activations against large weights → pooled 4 logits."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)  # the output head (kept FP32 by default), so conv2 is quantized
        with torch.no_grad():
            self.conv1.weight.copy_(torch.rand(self.conv1.weight.shape, generator=gen) * 4.0 + 1.0)
            self.conv1.bias.fill_(2.0)
            self.conv2.weight.copy_(torch.rand(self.conv2.weight.shape, generator=gen) * 0.5 + 0.5)
            self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return y.mean(dim=(2, 3))


def saturating_net() -> nn.Module:
    """The fixture model, deterministic weights."""
    return SaturatingNet().eval()
