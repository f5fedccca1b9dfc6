"""B-mode ultrasound frames with hypoechoic lesions, for frame screening and lesion segmentation.

Each frame is a curvilinear (sector) or linear-array acquisition: a field of view with
depth-dependent attenuation partly compensated by time-gain control (TGC), wavy tissue layers
(skin, fat, muscle, parenchyma) of different echogenicity, fully developed speckle (Rayleigh
amplitude, anisotropic grain), optionally one hypoechoic lesion (an ellipse with an irregular,
lobulated border) with posterior acoustic enhancement (cyst-like) or shadowing (solid), and log
compression to display values in [0, 1].  The lesion mask is the lesion shape inside the field
of view, so masks and images always agree.
"""

from __future__ import annotations

import numpy as np

from medge.calibration.synthetic.noise import smooth_noise, soft_step, speckle


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


def _geometry(n: int, size: int, rng: np.random.Generator):
    """Per-frame beam coordinates: depth and lateral position (both in [0, 1]) and the FOV mask."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = coords[:, None], coords[None, :]
    sector = (rng.random(n) < 0.5)[:, None, None]
    # curvilinear probe: apex above the image, beams fan out over ±half_angle
    apex_y = -_u(rng, 0.15, 0.35, n)
    half_angle = _u(rng, 0.45, 0.65, n)  # radians
    radius = np.sqrt((xx - 0.5) ** 2 + (yy - apex_y) ** 2)
    theta = np.arctan2(xx - 0.5, yy - apex_y)
    r0 = -apex_y + 0.02
    r_max = 1.0 - apex_y - 0.02
    depth_s = (radius - r0) / (r_max - r0)
    lateral_s = 0.5 + 0.5 * theta / half_angle
    fov_s = soft_step(1.0 - np.abs(theta) / half_angle, 0.004) * soft_step(depth_s, 0.002) * soft_step(1 - depth_s, 0.002)
    # linear probe: straight beams over a centred rectangle
    margin = _u(rng, 0.02, 0.12, n)
    depth_l = np.broadcast_to((yy - 0.02) / 0.96, radius.shape)
    lateral_l = np.broadcast_to((xx - margin) / (1 - 2 * margin), radius.shape)
    fov_l = soft_step(lateral_l, 0.002) * soft_step(1 - lateral_l, 0.002) * soft_step(depth_l, 0.002)
    depth = np.where(sector, depth_s, depth_l).astype(np.float32)
    lateral = np.where(sector, lateral_s, lateral_l).astype(np.float32)
    fov = np.where(sector, fov_s, fov_l).astype(np.float32)
    return depth, lateral, fov


def _lesion(n: int, size: int, rng: np.random.Generator, depth: np.ndarray, lateral: np.ndarray):
    """Irregular ellipse in beam coordinates: (n, H, W) soft shape in [0, 1] and its bottom depth."""
    cd = _u(rng, 0.3, 0.75, n)
    cl = _u(rng, 0.28, 0.72, n)
    a = _u(rng, 0.07, 0.17, n)  # lateral semi-axis (fraction of the FOV width)
    b = a * _u(rng, 0.55, 1.1, n)  # axial semi-axis; "wider than tall" is typical of benign lesions
    rot = _u(rng, -0.5, 0.5, n)
    dl, dd = lateral - cl, depth - cd
    u = dl * np.cos(rot) + dd * np.sin(rot)
    v = -dl * np.sin(rot) + dd * np.cos(rot)
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    phi = np.arctan2(v / b, u / a)
    border = np.ones_like(rho)
    for k in range(2, 7):  # lobulation: low-order harmonics of the border radius
        border = border + _u(rng, 0.0, 0.09 / k**0.5, n) * np.cos(k * phi + _u(rng, 0, 2 * np.pi, n))
    shape = soft_step(border - rho, 0.012)
    return shape, cd + b, cl, a


def generate_us(n: int, rng: np.random.Generator, *, size: int = 128, lesion_prob: float = 0.5,
                contrast: tuple[float, float] = (0.15, 0.5)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` B-mode frames (n, size, size) float32 in [0, 1], lesion-present flags (n,) and masks (n, size, size) uint8.

    `lesion_prob` is the probability that a frame contains a lesion; `contrast` is the range of
    lesion echogenicity relative to the surrounding tissue (smaller = darker lesion).
    """
    depth, lateral, fov = _geometry(n, size, rng)
    # tissue layers with wavy boundaries (depth fractions), each with its own echogenicity
    echo = np.full((n, size, size), 0.0, np.float32)
    bounds = np.sort(rng.uniform(0.04, 0.45, (n, 3)).astype(np.float32), axis=1)
    levels = rng.uniform(0.35, 1.0, (n, 4)).astype(np.float32)
    levels[:, 0] = rng.uniform(0.8, 1.0, n)  # bright skin line region
    below = np.ones_like(echo)  # 1 below the previous boundary
    for k in range(3):
        wave = _u(rng, 0.005, 0.03, n) * np.sin(2 * np.pi * _u(rng, 0.5, 2.0, n) * lateral + _u(rng, 0, 2 * np.pi, n))
        inside = soft_step(depth - (bounds[:, k][:, None, None] + wave), 0.006)
        echo += (below - inside) * levels[:, k][:, None, None]
        # bright specular interface at each boundary
        echo += 0.9 * np.exp(-(((depth - bounds[:, k][:, None, None] - wave) / 0.006) ** 2))
        below = inside
    echo += below * levels[:, 3][:, None, None]
    echo *= 1.0 + 0.25 * smooth_noise(rng, n, size, size, size / 24)  # parenchymal heterogeneity

    present = rng.random(n) < lesion_prob
    shape, bottom, cl, a = _lesion(n, size, rng, depth, lateral)
    shape = shape * present[:, None, None]
    rel = _u(rng, *contrast, n)
    echo = echo * (1.0 - shape * (1.0 - rel))
    # posterior enhancement (>1, cyst-like) or shadowing (<1, solid) along the beam below the lesion
    posterior = np.where(rng.random(n)[:, None, None] < 0.5, _u(rng, 1.25, 1.7, n), _u(rng, 0.35, 0.7, n))
    behind = soft_step(depth - bottom, 0.01) * np.exp(-np.clip(depth - bottom, 0, None) / 0.35)
    beam = np.exp(-(((lateral - cl) / (0.8 * a)) ** 4))
    echo = echo * (1.0 + (posterior - 1.0) * behind * beam * present[:, None, None])

    # attenuation (round trip) and partial TGC compensation with a few bumpy slider settings
    alpha = _u(rng, 1.5, 3.0, n)
    tgc = alpha * _u(rng, 0.6, 0.95, n) * depth + 0.15 * np.sin(2 * np.pi * _u(rng, 0.5, 1.5, n) * depth + _u(rng, 0, 6.3, n))
    intensity = echo * np.exp(-alpha * depth + tgc) * speckle(rng, n, size, size, 0.6 * size / 128, 1.5 * size / 128)
    intensity = intensity + 0.02 * np.abs(rng.standard_normal((n, size, size), dtype=np.float32))  # electronic noise
    dyn = _u(rng, 20, 60, n)  # log compression
    intensity = np.clip(intensity, 0, None)  # heterogeneity can dip below zero; echoes cannot
    img = np.log1p(dyn * intensity * _u(rng, 0.25, 0.45, n)) / np.log1p(dyn)
    img = np.clip(img * fov, 0, 1).astype(np.float32)
    masks = ((shape > 0.5) & (fov > 0.5)).astype(np.uint8)
    return img, present.astype(np.float32), masks


def generate_us_frames(n: int, rng: np.random.Generator, *, size: int = 128, lesion_prob: float = 0.5,
                       **kw) -> tuple[np.ndarray, np.ndarray]:
    """Frame screening data: (n, 128, 128) frames and (n,) float32 labels (1 = lesion present)."""
    img, present, _ = generate_us(n, rng, size=size, lesion_prob=lesion_prob, **kw)
    return img, present


def generate_us_segmentation(n: int, rng: np.random.Generator, *, size: int = 256, lesion_prob: float = 0.85,
                             **kw) -> tuple[np.ndarray, np.ndarray]:
    """Segmentation data: (n, 256, 256) frames and (n, 256, 256) uint8 lesion masks."""
    img, _, masks = generate_us(n, rng, size=size, lesion_prob=lesion_prob, **kw)
    return img, masks
