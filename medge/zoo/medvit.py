"""MedViTV2-style classifier: conv stem, dilated neighbourhood attention and a FasterKAN MLP.

Plain PyTorch that exports to standard ONNX ops (Gather, MatMul, Softmax, Tanh):

* `NeighbourhoodAttention2d` follows NATTEN's semantics for a static H×W: every query attends to
  a k×k window of keys spaced `dilation` apart, shifted inwards at the borders; the window
  indices and the relative-position-bias indices are precomputed buffers (NATTEN itself is
  CUDA-only and refuses ONNX).
* `FasterKAN` is LayerNorm → reflectional-switch basis ``1 − tanh²((x − g)/h)`` on a fixed grid
  → linear, the FasterKAN form of a Kolmogorov–Arnold layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _axis_neighbours(length: int, kernel: int, dilation: int) -> tuple[list[list[int]], list[list[int]]]:
    """NATTEN window along one axis: neighbour positions and relative offsets (0 … 2k-2)."""
    positions, offsets = [], []
    for i in range(length):
        group, index = i % dilation, i // dilation
        group_len = len(range(group, length, dilation))
        if group_len < kernel:
            raise ValueError(f"axis of {length} with dilation {dilation} is too short for a {kernel}-wide window")
        start = min(max(index - kernel // 2, 0), group_len - kernel)
        positions.append([group + (start + t) * dilation for t in range(kernel)])
        offsets.append([start + t - index + kernel - 1 for t in range(kernel)])
    return positions, offsets


def neighbour_tables(height: int, width: int, kernel: int, dilation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys index (H·W, k²), bias index (H·W, k²)) for dilated neighbourhood attention."""
    rows, row_off = _axis_neighbours(height, kernel, dilation)
    cols, col_off = _axis_neighbours(width, kernel, dilation)
    span = 2 * kernel - 1
    keys, bias = [], []
    for i in range(height):
        for j in range(width):
            keys.append([r * width + c for r in rows[i] for c in cols[j]])
            bias.append([dr * span + dc for dr in row_off[i] for dc in col_off[j]])
    return torch.tensor(keys, dtype=torch.long), torch.tensor(bias, dtype=torch.long)


class NeighbourhoodAttention2d(nn.Module):
    """Dilated neighbourhood attention over (B, H·W, C) tokens of a static H×W grid."""

    def __init__(self, dim: int, heads: int, height: int, width: int, kernel: int = 3, dilation: int = 1) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        keys, bias = neighbour_tables(height, width, kernel, dilation)
        self.register_buffer("keys", keys.reshape(-1), persistent=False)
        self.register_buffer("bias_index", bias.reshape(-1), persistent=False)
        self.window = kernel * kernel
        self.rpb = nn.Parameter(torch.zeros(heads, (2 * kernel - 1) ** 2))
        nn.init.trunc_normal_(self.rpb, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, N, d)
        k_n = k.index_select(2, self.keys).reshape(b, self.heads, n, self.window, self.head_dim)
        v_n = v.index_select(2, self.keys).reshape(b, self.heads, n, self.window, self.head_dim)
        attn = (q.unsqueeze(3) * k_n).sum(-1) * self.scale  # (B, h, N, k²)
        bias = self.rpb.index_select(1, self.bias_index).reshape(self.heads, n, self.window)
        attn = torch.softmax(attn + bias.unsqueeze(0), dim=-1)
        out = (attn.unsqueeze(-1) * v_n).sum(3)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FasterKAN(nn.Module):
    """LayerNorm → RSWAF basis 1 − tanh²((x − g)/h) on `grid` points in [-2, 2] → linear."""

    def __init__(self, dim_in: int, dim_out: int, grid: int = 8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim_in)
        self.register_buffer("grid", torch.linspace(-2.0, 2.0, grid), persistent=False)
        self.inv_h = (grid - 1) / 4.0
        self.linear = nn.Linear(dim_in * grid, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh((self.norm(x).unsqueeze(-1) - self.grid) * self.inv_h)
        basis = 1.0 - t * t
        return self.linear(basis.flatten(-2))


class MedViTBlock(nn.Module):
    """x + NA(LN(x)); x + KAN(x) (the KAN carries its own LayerNorm)."""

    def __init__(self, dim: int, heads: int, height: int, width: int, dilation: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = NeighbourhoodAttention2d(dim, heads, height, width, kernel=3, dilation=dilation)
        self.kan = FasterKAN(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm(x))
        return x + self.kan(x)


class MedViTStyle(nn.Module):
    """Conv stem (/4) → NA + KAN blocks (dilations 1, 2) → mean pool → sigmoid per finding."""

    def __init__(self, num_labels: int = 4, in_channels: int = 1, size: int = 64, dim: int = 48, heads: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.GELU(),
        )
        side = math.ceil(size / 4)
        self.blocks = nn.Sequential(*[MedViTBlock(dim, heads, side, side, d) for d in (1, 2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        tokens = self.blocks(f.flatten(2).transpose(1, 2))
        return torch.sigmoid(self.head(self.norm(tokens.mean(1))))


def medvit_style(num_labels: int = 4, in_channels: int = 1, size: int = 64, dim: int = 48, heads: int = 3) -> nn.Module:
    """A MedViTV2-style classifier for `size`×`size` inputs, in eval mode."""
    return MedViTStyle(num_labels, in_channels, size, dim, heads).eval()
