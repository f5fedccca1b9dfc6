"""Lightweight hybrid ViT for chest X-rays: conv stem → MobileViT-style blocks → sigmoid head.

The conv stem brings a 224×224 image down to a 14×14 feature map; each MobileViT-style block
mixes locally with a depthwise conv, globally with transformer layers over the 196 tokens, and
fuses both.  Attention is written with plain matmul + softmax so that it exports to ONNX opset 17
(TorchScript exporter) with a dynamic batch dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with explicit matmuls (no fused kernels)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: x + MHSA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _conv_bn_act(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(inplace=True),
    )


class MobileViTBlock(nn.Module):
    """Local depthwise conv → tokens → transformer layers → back to a map → fuse with the input."""

    def __init__(self, channels: int, dim: int, depth: int, heads: int) -> None:
        super().__init__()
        self.local = nn.Sequential(_conv_bn_act(channels, channels, 3, groups=channels), nn.Conv2d(channels, dim, 1))
        self.layers = nn.Sequential(*(TransformerLayer(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.project = _conv_bn_act(dim, channels, 1)
        self.fuse = _conv_bn_act(2 * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.local(x)
        batch, dim, height, width = y.shape
        tokens = y.flatten(2).transpose(1, 2)  # (B, H*W, dim)
        tokens = self.norm(self.layers(tokens))
        y = tokens.transpose(1, 2).reshape(batch, dim, height, width)
        return self.fuse(torch.cat([x, self.project(y)], dim=1))


class HybridViT(nn.Module):
    """Conv stem (stride 16) + MobileViT-style blocks + pooled linear head with sigmoid."""

    def __init__(
        self,
        num_labels: int = 4,
        in_channels: int = 1,
        stem_widths: Sequence[int] = (16, 32, 48, 64),
        dim: int = 96,
        depth: int = 2,
        heads: int = 4,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = []
        cin = in_channels
        for w in stem_widths:
            stem += [_conv_bn_act(cin, w, 3, stride=2), _conv_bn_act(w, w, 3, groups=w), _conv_bn_act(w, w, 1)]
            cin = w
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.Sequential(*(MobileViTBlock(cin, dim, depth, heads) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.pool(self.blocks(self.stem(x))).flatten(1)
        return torch.sigmoid(self.head(z))


def hybrid_vit(num_labels: int = 4, in_channels: int = 1, **kwargs) -> nn.Module:
    """Factory for `HybridViT` in eval mode."""
    return HybridViT(num_labels=num_labels, in_channels=in_channels, **kwargs).eval()
