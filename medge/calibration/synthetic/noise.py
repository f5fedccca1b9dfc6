"""Band-limited random fields shared by the synthetic generators (vectorised over a batch)."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft


def _gaussian_gain(height: int, width: int, sigma_y: float, sigma_x: float, real: bool) -> np.ndarray:
    fy = np.fft.fftfreq(height)[:, None]
    fx = (np.fft.rfftfreq(width) if real else np.fft.fftfreq(width))[None, :]
    return np.exp(-2.0 * np.pi**2 * ((fy * sigma_y) ** 2 + (fx * sigma_x) ** 2)).astype(np.float32)


def smooth_noise(rng: np.random.Generator, n: int, height: int, width: int, sigma_y: float,
                 sigma_x: float | None = None) -> np.ndarray:
    """(n, H, W) float32 Gaussian-filtered white noise with unit standard deviation.

    `sigma_y`/`sigma_x` are the Gaussian filter widths in pixels (anisotropic when they differ).
    The filter is applied in the Fourier domain (single precision), so the field wraps around.
    """
    sigma_x = sigma_y if sigma_x is None else sigma_x
    white = rng.standard_normal((n, height, width), dtype=np.float32)
    spec = sfft.rfft2(white, workers=-1) * _gaussian_gain(height, width, sigma_y, sigma_x, real=True)
    field = sfft.irfft2(spec, s=(height, width), workers=-1)
    return (field / (field.std(axis=(1, 2), keepdims=True) + 1e-12)).astype(np.float32)


def speckle(rng: np.random.Generator, n: int, height: int, width: int, sigma_y: float, sigma_x: float) -> np.ndarray:
    """(n, H, W) float32 fully developed speckle: Rayleigh-distributed amplitude with mean 1.

    The magnitude of filtered circular complex Gaussian noise; the anisotropic filter sets the
    axial (`sigma_y`) and lateral (`sigma_x`) speckle grain size in pixels.
    """
    white = rng.standard_normal((n, height, width), dtype=np.float32) + 1j * rng.standard_normal(
        (n, height, width), dtype=np.float32)
    field = sfft.ifft2(sfft.fft2(white, workers=-1) * _gaussian_gain(height, width, sigma_y, sigma_x, real=False),
                       workers=-1)
    amp = np.abs(field).astype(np.float32)
    return amp / (amp.mean(axis=(1, 2), keepdims=True) + 1e-12)


def soft_step(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth 0→1 step at x = 0 rising over about ±2·`width` (a cubic smoothstep edge)."""
    t = np.clip(np.asarray(x, dtype=np.float32) * np.float32(0.25 / max(width, 1e-6)) + np.float32(0.5), 0, 1)
    return t * t * (3 - 2 * t)
