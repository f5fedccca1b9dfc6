"""Promptable segmenter (SAM-Med2D / ESP-MedSAM style): image encoder, point prompt encoder and
a two-way mask decoder, for an ultrasound lesion marked by one click.

Exported two ways: as one graph ``(image, point) → mask`` and, as SAM's own ONNX export does, as
an image encoder ``image → embedding`` (run once per frame) plus a prompt/mask decoder
``(embedding, point) → mask`` (run per click).  The mask comes at the model's input size; resizing
it to the original image size stays outside the graph.  ``point`` is (B, 1, 2): the click's
(x, y) in [0, 1] image coordinates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from medge.zoo import load_safetensors_weights
from medge.zoo.catalog import WEIGHTS_DIR

if TYPE_CHECKING:
    import numpy as np


def _fourier(coords: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """SAM's random-Fourier positional encoding of (…, 2) coordinates in [0, 1]."""
    proj = (2 * coords - 1) @ basis * (2 * math.pi)
    return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class Attention(nn.Module):
    """Multi-head attention in plain matmuls (nn.MultiheadAttention's fused path does not export)."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        qh, kh, vh = self._split(self.q(q)), self._split(self.k(k)), self._split(self.v(v))
        attn = torch.softmax(torch.matmul(qh, kh.transpose(-1, -2)) * self.head_dim ** -0.5, dim=-1)
        return self.out(torch.matmul(attn, vh).transpose(1, 2).reshape(b, n, c))


class ImageEncoder(nn.Module):
    """Conv encoder (/8) + one self-attention layer → (B, dim, S/8, S/8) embedding."""

    def __init__(self, in_channels: int = 1, dim: int = 64) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for cout in (16, 32, dim):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()]
            cin = cout
        self.convs = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.convs(image)
        b, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        n = self.norm(t)
        t = t + self.attn(n, n, n)
        return t.transpose(1, 2).reshape(b, c, h, w)


class MaskDecoder(nn.Module):
    """Prompt encoder + two-way attention (tokens ↔ image) + upscaling → sigmoid mask at /1."""

    def __init__(self, dim: int = 64, side: int = 8) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("basis", torch.randn(2, dim // 2, generator=gen), persistent=False)
        ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        grid = torch.stack([(xs + 0.5) / side, (ys + 0.5) / side], dim=-1).reshape(1, side * side, 2).float()
        self.register_buffer("grid", grid, persistent=False)
        self.point_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.token_to_image, self.image_to_token = Attention(dim), Attention(dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.upscale = nn.Sequential(
            nn.ConvTranspose2d(dim, 32, 2, stride=2), nn.GELU(),
            nn.ConvTranspose2d(32, 16, 2, stride=2), nn.GELU(),
            nn.ConvTranspose2d(16, 16, 2, stride=2), nn.GELU(),
        )
        self.hyper = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 16))
        self.mask_scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, embedding: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        b, c, h, w = embedding.shape
        image_pe = _fourier(self.grid, self.basis)  # (1, HW, dim)
        tokens = torch.cat([self.mask_token.expand(b, -1, -1), _fourier(point, self.basis) + self.point_embed], dim=1)
        img = embedding.flatten(2).transpose(1, 2)  # (B, HW, dim)
        keys = img + image_pe
        tokens = self.norm1(tokens + self.token_to_image(tokens, keys, img))
        tokens = self.norm2(tokens + self.mlp(tokens))
        img = self.norm3(img + self.image_to_token(keys, tokens, tokens))
        feat = self.upscale(img.transpose(1, 2).reshape(b, c, h, w))  # (B, 16, 8h, 8w)
        weights = self.hyper(tokens[:, 0])  # (B, 16)
        logits = torch.einsum("bc,bchw->bhw", weights, feat).unsqueeze(1) * self.mask_scale
        return torch.sigmoid(logits)


class PromptableSegmenter(nn.Module):
    """``(image, point) → mask``: the encoder and the decoder in one graph."""

    def __init__(self, in_channels: int = 1, size: int = 64, dim: int = 64) -> None:
        super().__init__()
        self.encoder = ImageEncoder(in_channels, dim)
        self.decoder = MaskDecoder(dim, size // 8)

    def forward(self, image: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(image), point)


def lesion_clicks(masks: "np.ndarray", rng: "np.random.Generator") -> "np.ndarray":
    """One click per mask: a random lesion pixel's centre as (x, y) in [0, 1], shape (n, 1, 2).

    Every mask must hold a lesion (the demo task: a click inside the lesion)."""
    import numpy as np

    out = np.zeros((len(masks), 1, 2), np.float32)
    size_y, size_x = masks.shape[-2:]
    for i, mask in enumerate(np.asarray(masks).reshape(len(masks), size_y, size_x)):
        ys, xs = np.nonzero(mask)
        if not len(ys):
            raise ValueError(f"mask {i} holds no lesion to click on")
        j = int(rng.integers(len(ys)))
        out[i, 0] = ((xs[j] + 0.5) / size_x, (ys[j] + 0.5) / size_y)
    return out


def _with_weights(model: PromptableSegmenter, weights: str | None) -> PromptableSegmenter:
    if weights:
        path = WEIGHTS_DIR / weights
        if path.is_file():
            load_safetensors_weights(model, path)
    return model


def promptable_segmenter(in_channels: int = 1, size: int = 64, dim: int = 64) -> nn.Module:
    """The whole promptable segmenter, in eval mode."""
    return PromptableSegmenter(in_channels, size, dim).eval()


def promptable_encoder(in_channels: int = 1, size: int = 64, dim: int = 64,
                       shared_weights: str | None = "us-lesion-sam.safetensors") -> nn.Module:
    """The image encoder of the promptable segmenter (with the shared demo weights when shipped)."""
    return _with_weights(PromptableSegmenter(in_channels, size, dim), shared_weights).encoder.eval()


def promptable_decoder(in_channels: int = 1, size: int = 64, dim: int = 64,
                       shared_weights: str | None = "us-lesion-sam.safetensors") -> nn.Module:
    """The prompt/mask decoder of the promptable segmenter (with the shared demo weights when shipped)."""
    return _with_weights(PromptableSegmenter(in_channels, size, dim), shared_weights).decoder.eval()
