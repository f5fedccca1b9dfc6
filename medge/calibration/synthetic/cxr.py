"""Chest X-ray phantoms (PA view) with four findings: effusion, pneumothorax, nodule, cardiomegaly.

Anatomy: torso soft tissue, two lung fields with domed diaphragms and sharp costophrenic angles,
mediastinum and spine, heart shadow, posterior ribs, clavicles, vessel-like lung markings
(band-limited texture denser at the hila), soft-tissue and quantum noise, and per-image exposure (gain, offset, gamma)
variation.  X-ray convention: dense tissue is bright, aerated lung is dark; the image's left is the
patient's right.  Every finding is independent with ~30 % prevalence and deliberately subtle.

All maps are computed for a whole batch with numpy broadcasting: per-image parameters have shape
(n, 1, 1) against (H, W) coordinate grids.
"""

from __future__ import annotations

import numpy as np

from medge.calibration.synthetic.noise import smooth_noise, soft_step

FINDINGS: tuple[str, ...] = ("effusion", "pneumothorax", "nodule", "cardiomegaly")


def _u(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return rng.uniform(lo, hi, n).astype(np.float32)[:, None, None]


def generate_cxr(n: int, rng: np.random.Generator, *, size: int = 224, prevalence: float = 0.3,
                 difficulty: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """`n` phantoms (n, size, size) float32 in [0, 1] and multi-hot targets (n, 4) float32.

    `prevalence` is the probability of each finding (independently); `difficulty` > 1 makes the
    findings fainter and smaller, < 1 more obvious.
    """
    s = size / 224.0  # all geometry below is in 224-pixel units
    coords = np.arange(size, dtype=np.float32) / np.float32(s)
    yy, xx = coords[:, None], coords[None, :]  # broadcasting keeps 1-D terms cheap
    targets = (rng.random((n, len(FINDINGS))) < prevalence).astype(np.float32)
    faint = 1.0 / difficulty

    # --- body and thorax geometry (patient position/size variation) ---
    cx = _u(rng, 106, 118, n)  # midline
    cy = _u(rng, 100, 112, n)  # lung centre height
    half_thorax = _u(rng, 80, 92, n)  # midline → outer lung edge
    lung_rx = half_thorax * _u(rng, 0.42, 0.48, n)
    lung_ry = _u(rng, 66, 78, n)
    gap = half_thorax - 2 * lung_rx  # mediastinal half-gap
    body = soft_step(1.0 - np.sqrt(((xx - cx) / (half_thorax + 14)) ** 2 + ((yy - cy - 10) / 135) ** 2), 0.02)
    img = 0.12 + 0.42 * body  # air outside the body is dark, soft tissue mid-grey

    diaphragm = cy + lung_ry * _u(rng, 0.55, 0.7, n)  # dome apex height below lung centre
    dome = _u(rng, 10, 18, n)
    lung = np.zeros((n, size, size), np.float32)
    lcx_r, lcx_l = cx - gap - lung_rx, cx + gap + lung_rx
    side_info = []
    for lcx, tilt in ((lcx_r, 1.0), (lcx_l, -1.0)):
        r = np.sqrt(((xx - lcx) / lung_rx) ** 2 + ((yy - cy) / lung_ry) ** 2)
        dia_y = diaphragm + dome * ((xx - lcx) / lung_rx) ** 2 * 0.9  # lowest laterally → sharp CP angle
        field = soft_step(1.0 - r, 0.03) * soft_step(dia_y - yy, 1.2)
        lung = np.maximum(lung, field)
        side_info.append((lcx, r, dia_y, field, tilt))
    img = img - 0.30 * lung

    # --- lung markings: vessel-like texture, denser near the hila ---
    texture = smooth_noise(rng, n, size, size, 1.6 * s)
    hilum = np.exp(-(((np.abs(xx - cx) - gap - 10) / 45) ** 2 + ((yy - cy) / 55) ** 2))
    markings = np.clip(texture, 0, None) * (0.025 + 0.035 * hilum)

    # --- pneumothorax: apical/lateral rim without markings, plus a thin visible pleural line ---
    ptx_side = rng.integers(0, 2, n)
    ptx_depth = (_u(rng, 0.10, 0.22, n) * faint).astype(np.float32)
    rim = np.zeros((n, size, size), np.float32)
    pleural_line = np.zeros_like(rim)
    for k, (lcx, r, _, field, tilt) in enumerate(side_info):
        idx = np.flatnonzero((ptx_side == k) & (targets[:, 1] > 0))  # only images with this finding
        # upper/lateral sector: above lung centre and towards the outer wall
        lateral = (xx - lcx[idx]) * -tilt / lung_rx[idx]
        sector = soft_step(cy[idx] + 0.2 * lung_ry[idx] - yy, 6.0) * soft_step(lateral + 0.1, 0.15)
        inner = 1.0 - ptx_depth[idx]
        rim[idx] += sector * soft_step(r[idx] - inner, 0.012) * field[idx]
        pleural_line[idx] += sector * np.exp(-(((r[idx] - inner) * lung_ry[idx]) / 0.9) ** 2) * field[idx]
    markings = markings * (1.0 - np.clip(rim, 0, 1))
    img = img + markings * lung - 0.06 * faint * rim + 0.08 * faint * pleural_line

    # --- mediastinum, spine and heart (cardiothoracic ratio drives cardiomegaly) ---
    med = soft_step(gap + 6 - np.abs(xx - cx), 3.0) * soft_step(yy - (cy - lung_ry - 5), 4.0)
    img = img + 0.22 * med * (1 - lung)
    spine = soft_step(9 - np.abs(xx - cx), 2.0) * body
    img = img + 0.06 * spine
    ctr_normal = rng.normal(0.44, 0.03, n)
    ctr_big = rng.normal(0.50 + 0.06 * faint, 0.03, n)
    ctr = np.clip(np.where(targets[:, 3] > 0, np.maximum(ctr_big, 0.505), np.minimum(ctr_normal, 0.495)), 0.33, 0.68)
    heart_half = (ctr.astype(np.float32)[:, None, None] * 2 * half_thorax) / 2
    heart_cx = cx + heart_half * _u(rng, 0.15, 0.3, n)  # shifted to the patient's left
    heart_cy = diaphragm - _u(rng, 20, 26, n)
    heart_ry = _u(rng, 26, 32, n)
    heart = soft_step(1.0 - np.sqrt(((xx - heart_cx) / heart_half) ** 2 + ((yy - heart_cy) / heart_ry) ** 2), 0.04)
    heart = heart * soft_step(diaphragm + 4 - yy, 2.0)
    img = img + 0.24 * heart * (0.4 + 0.6 * lung)

    # --- ribs: periodic curved bands over the lungs; clavicles ---
    dx = np.abs(xx - cx)
    spacing = _u(rng, 15, 19, n)
    phase = (yy - 0.0045 * dx**2 + 0.22 * dx - cy) / spacing + _u(rng, 0, 1, n)
    ribs = np.clip(np.cos(2 * np.pi * phase) - 0.1, 0, None) / 0.9
    chest_wall = soft_step(half_thorax + 6 - dx, 3.0) * soft_step(diaphragm + 8 - yy, 4.0) * soft_step(dx - gap - 4, 3.0)
    img = img + 0.07 * ribs * (0.3 + 0.7 * lung) * chest_wall
    clav_y = cy - lung_ry + _u(rng, 2, 12, n) - 0.12 * (dx - 20)
    clavicle = np.exp(-(((yy - clav_y) / 3.2) ** 2)) * soft_step(dx - 12, 3) * soft_step(half_thorax - dx, 5)
    img = img + 0.13 * clavicle

    # --- pleural effusion: dependent opacity with a meniscus at one or both lung bases ---
    eff_side = rng.integers(0, 3, n)  # 0 right, 1 left, 2 both
    eff_height = _u(rng, 8, 26, n) * faint
    for k, (lcx, r, dia_y, field, tilt) in enumerate(side_info):
        idx = np.flatnonzero(((eff_side == k) | (eff_side == 2)) & (targets[:, 0] > 0))
        lateral = np.clip((xx - lcx[idx]) * -tilt / lung_rx[idx], -1, 1.2)
        level = dia_y[idx] - eff_height[idx] * (0.6 + 1.4 * np.clip(lateral, 0, None) ** 2)  # meniscus up the lateral wall
        fluid = soft_step(yy - level, 2.5) * field[idx]
        img[idx] = img[idx] + fluid * (0.20 * faint + 0.05)

    # --- nodule: small round opacity inside a lung field ---
    nod_side = rng.integers(0, 2, n)
    nod_r = _u(rng, 3.0, 7.5, n) * np.float32(min(1.0, faint + 0.3))
    ang = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
    rad = np.sqrt(rng.uniform(0.0, 0.55, n)).astype(np.float32)
    amplitude = _u(rng, 0.12, 0.2, n)
    idx = np.flatnonzero(targets[:, 2] > 0)
    lcx_pick = np.where(nod_side[:, None, None] == 0, lcx_r, lcx_l)[idx]
    nx = lcx_pick + (rad * np.cos(ang))[idx, None, None] * lung_rx[idx]
    ny = cy[idx] + (rad * np.sin(ang))[idx, None, None] * lung_ry[idx] * 0.8
    nodule = np.exp(-(((xx - nx) ** 2 + (yy - ny) ** 2) / nod_r[idx] ** 2) ** 1.5)
    img[idx] = img[idx] + nodule * amplitude[idx] * faint

    # --- acquisition: soft-tissue mottle, quantum noise, exposure/contrast/gamma ---
    img = img + 0.018 * smooth_noise(rng, n, size, size, 6 * s) * body
    img = img + rng.standard_normal((n, size, size), dtype=np.float32) * _u(rng, 0.008, 0.02, n)
    img = np.clip(img, 0, 1)
    img = np.clip(_u(rng, 0.85, 1.15, n) * img ** _u(rng, 0.8, 1.25, n) + _u(rng, -0.06, 0.06, n), 0, 1)
    return img.astype(np.float32), targets
