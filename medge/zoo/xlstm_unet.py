"""xLSTM-UNet: a small U-Net whose bottleneck is a stack of mLSTM blocks (parallel stabilised form).

The mLSTM parallel form for a sequence of L tokens (per head):
``log f = logsigmoid(f̃)``, ``F = cumsum(log f)``, ``D[t, s] = F[t] − F[s] + ĩ[s]`` for s ≤ t
(−∞ above the diagonal, a constant causal mask), ``m[t] = maxₛ D[t, s]`` (the stabiliser),
``C = (q kᵀ/√d) ⊙ exp(D − m)``, ``n = max(|Σₛ C|, exp(−m))`` and ``h = (C / n) v`` — all standard
ONNX ops (CumSum, ReduceMax, Exp, MatMul).  The second block reads the tokens in reverse, so that
every pixel of the bottleneck sees the whole image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MLSTMLayer(nn.Module):
    """One multi-head mLSTM layer in the parallel stabilised form, pre-norm, with a gated output."""

    def __init__(self, dim: int, length: int, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.gates = nn.Linear(dim, 2 * heads)  # input and forget gate pre-activations per head
        self.out_gate = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("causal", torch.tril(torch.ones(length, length, dtype=torch.bool)), persistent=False)
        nn.init.constant_(self.gates.bias[heads:], 3.0)  # forget gates start open

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.norm(x)
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        i_pre, f_pre = self.gates(h).transpose(1, 2).chunk(2, dim=1)  # (B, heads, L) each
        log_f = F.logsigmoid(f_pre)
        cum = torch.cumsum(log_f, dim=-1)
        d = cum.unsqueeze(-1) - cum.unsqueeze(-2) + i_pre.unsqueeze(-2)  # (B, heads, L, L)
        d = d.masked_fill(~self.causal, float("-inf"))
        m = d.amax(dim=-1, keepdim=True)
        weights = torch.exp(d - m)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.head_dim ** -0.5 * weights
        norm = torch.maximum(scores.sum(-1, keepdim=True).abs(), torch.exp(-m))
        out = torch.matmul(scores / (norm + 1e-6), v).transpose(1, 2).reshape(b, n, c)
        return x + self.proj(out * torch.sigmoid(self.out_gate(h)))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class XLSTMUNet(nn.Module):
    """Encoder 16-32-64 (/8) → 2 mLSTM layers (forward, reversed) → decoder with skips → sigmoid mask."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, size: int = 64, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _conv_block(in_channels, w), _conv_block(w, 2 * w), _conv_block(2 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        length = (size // 8) ** 2
        self.forward_layer = MLSTMLayer(4 * w, length)
        self.reverse_layer = MLSTMLayer(4 * w, length)
        self.up3, self.dec3 = nn.ConvTranspose2d(4 * w, 4 * w, 2, stride=2), _conv_block(8 * w, 2 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(2 * w, 2 * w, 2, stride=2), _conv_block(4 * w, w)
        self.up1, self.dec1 = nn.ConvTranspose2d(w, w, 2, stride=2), _conv_block(2 * w, w)
        self.out = nn.Conv2d(w, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        bott = self.pool(e3)
        b, c, hh, ww = bott.shape
        tokens = self.forward_layer(bott.flatten(2).transpose(1, 2))
        tokens = self.reverse_layer(tokens.flip(1)).flip(1)
        bott = tokens.transpose(1, 2).reshape(b, c, hh, ww)
        d3 = self.dec3(torch.cat([self.up3(bott), e3], 1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return torch.sigmoid(self.out(d1))


def xlstm_unet(in_channels: int = 1, out_channels: int = 1, size: int = 64, width: int = 16) -> nn.Module:
    """An xLSTM-UNet for `size`×`size` inputs (size divisible by 8), in eval mode."""
    return XLSTMUNet(in_channels, out_channels, size, width).eval()
