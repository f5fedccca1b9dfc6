"""Residual test models for pruning, given to the CLI as ``residual_models:<factory>``.

Put ``tests/prune`` on PYTHONPATH to import them from a subprocess (see conftest.py).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn + shortcut (identity, or a strided 1x1 projection), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class TinyResNet(nn.Module):
    """Stem, two stages of residual blocks (identity and projection shortcuts), sigmoid head."""

    def __init__(self, in_channels: int = 1, num_labels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = nn.Sequential(ResidualBlock(width, width), ResidualBlock(width, width))
        self.stage2 = nn.Sequential(ResidualBlock(width, 2 * width, stride=2), ResidualBlock(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.pool(self.stage2(self.stage1(self.stem(x)))).flatten(1)))


class ResidualSkip1d(nn.Module):
    """1-D conv stack whose output adds a 1x1 projection of the input (output-side residual)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 12, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(in_channels, width, 7, padding=3), nn.ReLU(),
                                  nn.Conv1d(width, width, 7, padding=3), nn.ReLU(),
                                  nn.Conv1d(width, out_channels, 1))
        self.skip = nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


def tiny_resnet(in_channels: int = 1, num_labels: int = 3, width: int = 16) -> nn.Module:
    """Factory for `TinyResNet` in eval mode (seeded weights)."""
    torch.manual_seed(0)
    return TinyResNet(in_channels, num_labels, width).eval()


def residual_skip_1d(width: int = 16) -> nn.Module:
    """Factory for `ResidualSkip1d` in eval mode (seeded weights)."""
    torch.manual_seed(0)
    return ResidualSkip1d(width=width).eval()
