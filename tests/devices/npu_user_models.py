"""Users' own models for the phone-NPU tests, given to the CLI as ``npu_user_models:<factory>``
(tests/devices on the `medge` subprocess's PYTHONPATH).

* `promptable_seg`: a two-input promptable segmenter, image (1, 1, H, W) + click point (1, 2) in
  [0, 1] → mask logits (1, 1, H, W); it cannot run on the image alone.
* `mamba_div_ecg`: a Mamba-style ECG reconstructor (leads II, V1, V5 → 12 leads) whose selective
  scan is normalised by the sum of its causal scores, ``y = (S u) / (|S 1| + ε)``: the divisor
  comes near zero, so an int8 DIV sees a divisor that quantizes to its zero point.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PromptableSeg(nn.Module):
    """Conv encoder; the click is embedded and added to every position; conv decoder → mask logits."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.prompt = nn.Linear(2, width)
        self.decoder = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                     nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(width, 1, 1))

    def forward(self, image: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        features = self.encoder(image) + self.prompt(point)[:, :, None, None]
        return self.decoder(features)


class NormalisedScan(nn.Module):
    """Mamba-style mixer: in-proj → gate, causal scores ``C Bᵀ`` scaled by Δ, normalised scan."""

    def __init__(self, dim: int, length: int, state: int = 1) -> None:
        super().__init__()
        self.state = state
        self.norm = nn.LayerNorm(dim)
        self.in_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.x_proj = nn.Linear(dim, 2 * state + dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)
        self.register_buffer("causal", torch.tril(torch.ones(length, length)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs, z = self.in_proj(self.norm(x)).chunk(2, dim=-1)
        b_in, c_out, dt = torch.split(self.x_proj(xs), [self.state, self.state, xs.shape[-1]], dim=-1)
        scores = torch.matmul(c_out, b_in.transpose(1, 2)) * self.causal  # (B, L, L), signed
        norm = scores.sum(dim=-1, keepdim=True).abs()  # near zero where the scores cancel
        y = torch.matmul(scores, F.softplus(dt) * xs) / (norm + 1e-3)
        return x + self.out_proj(y * F.silu(z))


class MambaDivECG(nn.Module):
    """Conv stem (/25) → a normalised scan → upsampling → 12 leads."""

    def __init__(self, samples: int = 5000, dim: int = 16, stride: int = 25) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(3, dim, 7, padding=3), nn.GELU(),
                                  nn.Conv1d(dim, dim, stride, stride=stride))
        self.mixer = NormalisedScan(dim, samples // stride)
        self.up = nn.ConvTranspose1d(dim, dim, stride, stride=stride)
        self.head = nn.Conv1d(dim + 3, 12, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.mixer(self.stem(x).transpose(1, 2)).transpose(1, 2)
        return self.head(torch.cat([self.up(f), x], dim=1))


def promptable_seg(width: int = 8) -> nn.Module:
    """A seeded `PromptableSeg`."""
    torch.manual_seed(0)
    return PromptableSeg(width).eval()


def mamba_div_ecg(samples: int = 5000) -> nn.Module:
    """A seeded `MambaDivECG` for `samples`-long 3-lead signals."""
    torch.manual_seed(0)
    return MambaDivECG(samples).eval()
