"""DCT-HistoTransformer-style classifier: MobileConv blocks plus attention in the DCT domain.

The 2-D DCT is two matmuls with a fixed orthonormal DCT-II basis, ``Y = D X Dᵀ``, keeping the
low-frequency `band`×`band` corner (``D[:band]``); attention runs over those coefficients as
tokens and the inverse transform ``Dᵀ Y D`` brings the result back to the feature map.  No
``torch.fft`` (which the TorchScript exporter and TensorRT cannot take).  The DC coefficient
dwarfs the rest, so the tokens are LayerNorm-ed before attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n×n): ``D @ x`` is the DCT of a length-n vector."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.float()


class MobileConv(nn.Module):
    """Depthwise 3×3 → BN → ReLU6 → pointwise 1×1 → BN → ReLU6 (MobileNet's separable conv)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DCTAttention(nn.Module):
    """Self-attention over the low `band`×`band` DCT coefficients of a (B, C, S, S) map."""

    def __init__(self, dim: int, side: int, band: int, heads: int = 2) -> None:
        super().__init__()
        low = dct_matrix(side)[:band]
        self.register_buffer("basis", low, persistent=False)  # (band, S)
        self.register_buffer("basis_t", low.t().contiguous(), persistent=False)  # (S, band)
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.pos = nn.Parameter(torch.zeros(1, band * band, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.shape
        coeffs = torch.matmul(torch.matmul(self.basis, x), self.basis_t)  # (B, C, band, band)
        band = coeffs.shape[-1]
        tokens = coeffs.flatten(2).transpose(1, 2)  # (B, band², C)
        h = self.norm(tokens) + self.pos
        qkv = self.qkv(h).reshape(b, -1, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(torch.matmul(qkv[0], qkv[1].transpose(-1, -2)) * self.head_dim ** -0.5, dim=-1)
        out = torch.matmul(attn, qkv[2]).transpose(1, 2).reshape(b, -1, c)
        update = self.proj(out).transpose(1, 2).reshape(b, c, band, band)
        return x + torch.matmul(torch.matmul(self.basis_t, update), self.basis)  # inverse DCT of the low band


class DCTHistoStyle(nn.Module):
    """MobileConv stem (/8) → DCT attention → MobileConv → pool → sigmoid."""

    def __init__(self, num_labels: int = 1, in_channels: int = 1, size: int = 64, dim: int = 48, band: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
            MobileConv(16, 32, stride=2), MobileConv(32, dim, stride=2),
        )
        side = math.ceil(size / 8)
        self.dct_attn = DCTAttention(dim, side, band)
        self.mix = MobileConv(dim, dim)
        self.head = nn.Linear(dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.mix(self.dct_attn(self.stem(x)))
        return torch.sigmoid(self.head(f.mean((2, 3))))


def dct_histo_style(num_labels: int = 1, in_channels: int = 1, size: int = 64, dim: int = 48, band: int = 4) -> nn.Module:
    """A DCT-HistoTransformer-style classifier for `size`×`size` inputs, in eval mode."""
    return DCTHistoStyle(num_labels, in_channels, size, dim, band).eval()
