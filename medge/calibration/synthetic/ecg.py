"""12-lead ECGs from a moving heart dipole (vectorcardiogram), projected onto the lead vectors.

The heart's electrical activity is one 3-D dipole D(t) (x: patient's left, y: inferior,
z: anterior).  Each beat adds P, QRS and T loops, every wave a sum of two Gaussians in time with
different 3-D directions (so the waves trace loops, not lines).  QRS timing is fixed, P-R and the
T wave scale with the RR interval (Bazett); heart rate 50-110 bpm with respiratory and random RR
variability; amplitude, electrical axis and torso (electrode gain/rotation) vary per record.

Electrode potentials RA, LA, LL, V1..V6 are projections of D plus a small non-dipolar local term
and electrode noise (baseline wander, powerline, EMG).  The 12 leads are then formed exactly as an
electrocardiograph does (I = LA - RA, II = LL - RA, III = LL - LA, augmented leads against the
other two limbs, V_k against Wilson's central terminal), so Einthoven (II = I + III) and
Goldberger (aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2) hold to rounding.
"""

from __future__ import annotations

import numpy as np

from medge.calibration.synthetic.noise import smooth_noise

FS_HZ = 500
SAMPLES = 5000
STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
INPUT_LEADS: tuple[str, ...] = ("II", "V1", "V5")
INPUT_INDEX: tuple[int, ...] = tuple(STANDARD_LEADS.index(lead) for lead in INPUT_LEADS)

# Wave templates: (centre s relative to R, width s, direction (x, y, z), amplitude mV, RR-scaled?)
# Two Gaussians per wave with different directions make the 3-D loops.
_WAVES = (
    (-0.175, 0.022, (0.5, 0.8, -0.2), 0.14, True),  # P (first half: right atrium)
    (-0.150, 0.022, (0.9, 0.4, 0.1), 0.10, True),  # P (second half: left atrium)
    (-0.028, 0.008, (-0.5, -0.1, 0.85), 0.18, False),  # Q / septal (rightward, anterior)
    (0.000, 0.011, (0.55, 0.75, -0.35), 1.35, False),  # R main (leftward, inferior, posterior)
    (0.014, 0.010, (0.75, 0.25, -0.6), 0.55, False),  # late R (rotates the QRS loop)
    (0.034, 0.011, (-0.35, -0.55, -0.75), 0.42, False),  # S (terminal, posterior-superior)
    (0.270, 0.050, (0.6, 0.6, 0.5), 0.32, True),  # T (concordant with QRS, anterior)
    (0.310, 0.040, (0.7, 0.5, 0.2), 0.12, True),  # T descending limb
)

# Electrode lead vectors (x, y, z) in mV per unit dipole; limb electrodes satisfy WCT = 0.
_I_VEC = np.array([1.0, 0.0, 0.0])
_II_VEC = np.array([0.5, np.sqrt(3) / 2, 0.0])
_RA = -(_I_VEC + _II_VEC) / 3
_LA = _RA + _I_VEC
_LL = _RA + _II_VEC
_PRECORDIAL_ANGLES_DEG = (105.0, 85.0, 65.0, 45.0, 20.0, 0.0)  # in the transverse (x, z) plane from +x towards +z


def _precordial_vectors() -> np.ndarray:
    ang = np.deg2rad(_PRECORDIAL_ANGLES_DEG)
    gain = np.array([1.1, 1.6, 1.7, 1.6, 1.3, 1.0])
    return np.stack([np.cos(ang), np.full_like(ang, 0.15), np.sin(ang)], axis=1) * gain[:, None]


def _rotation(rng: np.random.Generator, n: int, axis_deg: np.ndarray, jitter_deg: float) -> np.ndarray:
    """(n, 3, 3) rotations: frontal-plane axis rotation plus small random tilts."""
    def rot(axis: int, ang: np.ndarray) -> np.ndarray:
        c, s = np.cos(ang), np.sin(ang)
        m = np.zeros((len(ang), 3, 3))
        i, j = [k for k in range(3) if k != axis]
        m[:, axis, axis] = 1
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
        return m

    frontal = rot(2, np.deg2rad(axis_deg))  # about z: moves the frontal-plane electrical axis
    tilt_x = rot(0, np.deg2rad(rng.normal(0, jitter_deg, n)))
    tilt_y = rot(1, np.deg2rad(rng.normal(0, jitter_deg, n)))
    return frontal @ tilt_x @ tilt_y


def _beat_times(rng: np.random.Generator, n: int, duration: float, max_beats: int) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (n, max_beats) (NaN-padded) and the mean RR per record (n,)."""
    hr = rng.uniform(50, 110, n)
    rr_mean = 60.0 / hr
    k = np.arange(max_beats)[None, :]
    resp = 0.03 * np.sin(2 * np.pi * rng.uniform(0.15, 0.35, n)[:, None] * k * rr_mean[:, None] + rng.uniform(0, 6.3, n)[:, None])
    rr = rr_mean[:, None] * (1 + resp + rng.normal(0, 1, (n, max_beats)) * rng.uniform(0.01, 0.05, n)[:, None])
    first = rng.uniform(-0.6, 0.2, n)[:, None] * rr_mean[:, None]
    times = first + np.concatenate([np.zeros((n, 1)), np.cumsum(rr[:, :-1], axis=1)], axis=1)
    times[times > duration + 0.6] = np.nan
    return times, rr


def _gaussian_train(centres: np.ndarray, widths: np.ndarray, length: int, n: int) -> np.ndarray:
    """(n, L) sum over beats of Gaussians exp(-(t-c)^2 / 2w^2), evaluated only within ±5 w of c."""
    half = int(np.ceil(5 * widths.max() * FS_HZ))
    offsets = np.arange(-half, half + 1)
    pos = np.round(centres * FS_HZ).astype(np.int64)[:, :, None] + offsets  # (n, B, W) sample indices
    values = np.exp(-0.5 * ((pos / FS_HZ - centres[:, :, None]) / widths[:, :, None]) ** 2)
    keep = (pos >= 0) & (pos < length)
    flat = (np.arange(n)[:, None, None] * length + pos)[keep]
    return np.bincount(flat, weights=values[keep], minlength=n * length).reshape(n, length)


def _dipole(rng: np.random.Generator, n: int, t: np.ndarray) -> np.ndarray:
    """(n, 3, L) heart dipole trajectory in mV."""
    duration = t[-1] + 1.0 / FS_HZ
    times, rr = _beat_times(rng, n, duration, max_beats=int(duration * 110 / 60) + 4)
    amp = rng.uniform(0.6, 1.4, n)
    wave_gain = rng.uniform(0.75, 1.25, (n, len(_WAVES)))
    d = np.zeros((n, 3, t.size))
    valid = ~np.isnan(times)
    rr_scale = np.sqrt(np.where(valid, rr, 1.0))
    for wi, (centre, width, direction, a, scaled) in enumerate(_WAVES):
        direction = np.asarray(direction) / np.linalg.norm(direction)
        scale = rr_scale if scaled else np.ones_like(rr_scale)
        signal = _gaussian_train(np.where(valid, times, -10.0) + centre * scale, width * scale, t.size, n)
        d += (a * wave_gain[:, wi] * amp)[:, None, None] * direction[None, :, None] * signal[:, None, :]
    axis = rng.uniform(-30, 90, n) - 55.0  # template axis is ~55 deg; rotate to the sampled axis
    return np.einsum("nij,njl->nil", _rotation(rng, n, axis, 8.0), d)


def _electrode_noise(rng: np.random.Generator, n: int, electrodes: int, t: np.ndarray) -> np.ndarray:
    """(n, E, L) baseline wander + powerline + EMG noise in mV, independent per electrode."""
    wander = np.zeros((n, electrodes, t.size))
    for _ in range(2):
        f = rng.uniform(0.05, 0.5, (n, electrodes, 1))
        wander += rng.uniform(0, 0.08, (n, electrodes, 1)) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3, (n, electrodes, 1)))
    mains = np.where(rng.random(n) < 0.5, 50.0, 60.0)[:, None, None]
    powerline = rng.uniform(0, 0.02, (n, electrodes, 1)) * np.sin(2 * np.pi * mains * t + rng.uniform(0, 6.3, (n, electrodes, 1)))
    emg_level = rng.uniform(0.002, 0.015, (n, 1, 1))
    emg = smooth_noise(rng, n * electrodes, 1, t.size, 0.1, 0.8).reshape(n, electrodes, t.size) * emg_level
    return wander + powerline + emg


def generate_ecg(n: int, rng: np.random.Generator, *, samples: int = SAMPLES,
                 noise: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """`n` records: inputs (n, 3, samples) leads II, V1, V5 and targets (n, 12, samples), float32 mV.

    `noise` scales all electrode noise (0 gives clean, noiseless ECGs).
    """
    t = np.arange(samples) / FS_HZ
    dipole = _dipole(rng, n, t)
    # torso variation: per-record electrode gain and small rotation of the precordial vectors
    limb = np.stack([_RA, _LA, _LL])  # (3, 3)
    prec = _precordial_vectors()[None] * rng.uniform(0.85, 1.15, (n, 6, 1))
    prec = np.einsum("nej,nkj->nek", prec, _rotation(rng, n, rng.normal(0, 5, n), 5.0))
    potentials = np.concatenate(
        [np.einsum("ej,njl->nel", limb, dipole), np.einsum("nej,njl->nel", prec, dipole)], axis=1
    )  # (n, 9, L): RA, LA, LL, V1..V6 electrodes
    # non-dipolar local activity near each precordial electrode (a small smooth deviation)
    local = smooth_noise(rng, n * 6, 1, samples, 0.1, 12.0).reshape(n, 6, samples)
    potentials[:, 3:] += 0.04 * local * np.abs(np.einsum("nej,njl->nel", prec, dipole)).max(axis=2, keepdims=True)
    potentials += noise * _electrode_noise(rng, n, 9, t)
    ra, la, ll = potentials[:, 0], potentials[:, 1], potentials[:, 2]
    wct = (ra + la + ll) / 3
    leads = np.stack(
        [la - ra, ll - ra, ll - la, ra - (la + ll) / 2, la - (ra + ll) / 2, ll - (ra + la) / 2]
        + [potentials[:, 3 + k] - wct for k in range(6)],
        axis=1,
    ).astype(np.float32)
    return np.ascontiguousarray(leads[:, list(INPUT_INDEX)]), leads
