"""3 leads → 12 leads, window by window, live (cross-faded hops) and offline.

`LeadModel` runs one window through a reconstruction model whose metadata names its input
leads, output leads, sample rate and window length; it resamples when the device rate differs,
keeps the measured leads as measured, and -- unless the model says its training data did not
obey them -- derives III, aVR, aVL and aVF exactly from I and II (Einthoven, Goldberger).

`StreamingReconstructor` keeps the newest window of filtered input, reconstructs it every hop and
emits the new samples.  The last `fade` samples of each window are held back and cross-faded
linearly with the next window's estimate, so consecutive windows join without a step.  A window
that contains missing input is flagged; its output is NaN exactly where the input was missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from medge.errors import DataError

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
DERIVED_LEADS: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")
FADE_S = 0.02


def derive_limb_leads(leads: np.ndarray, names: tuple[str, ...] = STANDARD_LEADS) -> np.ndarray:
    """Overwrite III, aVR, aVL, aVF of a (12, L) array from its I and II (in place; returned)."""
    i, ii = leads[names.index("I")], leads[names.index("II")]
    leads[names.index("III")] = ii - i
    leads[names.index("aVR")] = -(i + ii) / 2
    leads[names.index("aVL")] = i - ii / 2
    leads[names.index("aVF")] = ii - i / 2
    return leads


def einthoven_residual(leads: np.ndarray, names: tuple[str, ...] = STANDARD_LEADS) -> float:
    """RMS of (III − (II − I)) relative to the RMS of lead II: ≈ 0 for a real electrocardiograph."""
    i, ii, iii = (np.asarray(leads[names.index(n)], dtype=np.float64) for n in ("I", "II", "III"))
    scale = float(np.sqrt(np.nanmean(ii ** 2))) or 1.0
    return float(np.sqrt(np.nanmean((iii - (ii - i)) ** 2)) / scale)


@dataclass
class LeadModel:
    """One reconstruction model: `infer((1, leads, samples) float32) -> (1, outputs, samples)`."""

    infer: Callable[[np.ndarray], np.ndarray]
    input_leads: tuple[str, ...]
    output_leads: tuple[str, ...]
    rate_hz: float
    samples: int
    scale: float = 1.0
    derive_limb_leads: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        missing = [lead for lead in STANDARD_LEADS if lead not in self.output_leads]
        if missing:
            raise DataError(f"model {self.name} outputs {', '.join(self.output_leads)}; an ECG reconstruction "
                            f"model must output the 12 standard leads (missing {', '.join(missing)})")
        self._out_order = [self.output_leads.index(lead) for lead in STANDARD_LEADS]

    def window(self, inputs_mv: np.ndarray, rate_hz: float | None = None) -> np.ndarray:
        """(len(input_leads), L) filtered mV at `rate_hz` → (12, L) mV in STANDARD_LEADS order.

        NaN inputs are fed as 0 and come back NaN in every output lead.
        """
        from medge.calibration.preprocess import resample_signal

        rate = float(rate_hz or self.rate_hz)
        x = np.asarray(inputs_mv, dtype=np.float64)
        missing = ~np.isfinite(x).all(axis=0)
        x = np.where(np.isfinite(x), x, 0.0)
        length = x.shape[1]
        xm = resample_signal(x, rate, self.rate_hz)
        n = xm.shape[1]
        if n < self.samples:  # the stream's first window: zeros before the first sample
            xm = np.concatenate([np.zeros((xm.shape[0], self.samples - n)), xm], axis=1)
        elif n > self.samples:
            raise DataError(f"window of {n} samples is longer than the model's {self.samples}")
        y = np.asarray(self.infer((xm * self.scale)[None].astype(np.float32)))[0][:, -n:]
        y = resample_signal(y.astype(np.float64), self.rate_hz, rate)[:, :length]
        out = y[self._out_order]
        for k, lead in enumerate(self.input_leads):  # the measured leads stay as measured
            if lead in STANDARD_LEADS:
                out[STANDARD_LEADS.index(lead)] = x[k]
        if self.derive_limb_leads:
            derive_limb_leads(out)
        out[:, missing] = np.nan
        return out


def reconstruct_offline(model: LeadModel, inputs_mv: np.ndarray, rate_hz: float,
                        overlap_s: float = 1.0) -> np.ndarray:
    """(leads, N) filtered mV → (12, N) mV: model-length windows overlapping by `overlap_s`,
    cross-faded linearly in the overlaps; the last window is aligned with the record's end."""
    x = np.asarray(inputs_mv, dtype=np.float64)
    total = x.shape[1]
    win = int(round(model.samples * rate_hz / model.rate_hz))
    if total <= win:
        return model.window(x, rate_hz)
    overlap = min(int(round(overlap_s * rate_hz)), win // 2)
    starts = list(range(0, total - win, win - overlap)) + [total - win]
    out = np.zeros((len(STANDARD_LEADS), total))
    weight = np.zeros(total)
    ramp = np.ones(win)
    if overlap:
        ramp[:overlap] = np.linspace(0, 1, overlap + 2)[1:-1]
        ramp[-overlap:] = ramp[:overlap][::-1]
    for k, s in enumerate(starts):
        w = ramp.copy()
        if k == 0:
            w[:overlap] = 1.0
        if k == len(starts) - 1:
            w[-overlap:] = 1.0
        y = model.window(x[:, s:s + win], rate_hz)
        out[:, s:s + win] += np.nan_to_num(y) * w
        weight[s:s + win] += w
        bad = ~np.isfinite(y[0])
        out[:, s:s + win][:, bad] = np.nan  # a NaN in any window stays NaN
    return out / weight


@dataclass
class OutputChunk:
    """Reconstructed samples [start, start + len) in STANDARD_LEADS order (mV)."""

    start: int
    values_mv: np.ndarray  # (n, 12)
    flagged: bool  # the window touched missing input
    reconstruct_ms: float


@dataclass
class StreamingReconstructor:
    """Ring buffer of filtered input + one reconstruction per hop, cross-faded."""

    model: LeadModel
    rate_hz: float
    hop_s: float = 1.0
    fade_s: float = FADE_S
    _buf: np.ndarray = field(init=False)
    _first: int | None = field(default=None, init=False)
    _end: int = field(default=0, init=False)  # absolute index one past the newest buffered sample
    _done: int | None = field(default=None, init=False)  # window end of the last reconstruction
    _pending: np.ndarray | None = field(default=None, init=False)  # held-back tail (fade, 12)
    skipped_samples: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.window_n = int(round(self.model.samples * self.rate_hz / self.model.rate_hz))
        self.hop_n = max(1, int(round(self.hop_s * self.rate_hz)))
        self.fade_n = max(1, int(round(self.fade_s * self.rate_hz)))
        if self.hop_n < self.fade_n or self.hop_n > self.window_n - self.fade_n:
            raise DataError(f"hop {self.hop_s:g} s must be between {self.fade_s:g} s and the window "
                            f"({self.window_n / self.rate_hz:g} s) minus the fade")
        self._buf = np.full((3, self.window_n), np.nan)

    def push(self, start: int, filtered_mv: np.ndarray) -> None:
        """Append (n, 3) filtered samples starting at absolute index `start` (≥ the buffer end)."""
        if self._first is None:
            self._first, self._end, self._done = start, start, start
        n = len(filtered_mv)
        shift = start + n - self._end  # samples the buffer moves left (gap + new samples)
        if shift >= self.window_n:
            self._buf[:] = np.nan
        elif shift > 0:
            self._buf[:, :-shift] = self._buf[:, shift:]
            self._buf[:, -shift:] = np.nan
        take = min(n, self.window_n)
        self._buf[:, -take:] = filtered_mv[-take:].T
        self._end = start + n

    def ready(self) -> bool:
        """Whether a hop's worth of new samples is buffered."""
        return self._done is not None and self._end - self._done >= self.hop_n

    def step(self) -> OutputChunk:
        """Reconstruct the newest window; emit [last end − fade, end − fade) with the cross-fade."""
        assert self._done is not None and self._first is not None
        end, prev = self._end, self._done
        avail = min(self.window_n, end - self._first)
        t0 = time.perf_counter()
        y = self.model.window(self._buf[:, -avail:], self.rate_hz).T  # (avail, 12)
        ms = (time.perf_counter() - t0) * 1e3
        flagged = bool(np.isnan(self._buf[:, -avail:]).any())
        out_start = max(prev - self.fade_n, self._first)
        out = np.full((end - self.fade_n - out_start, len(STANDARD_LEADS)), np.nan)
        win_start = end - avail
        lo = max(out_start, win_start)  # samples older than the window cannot be reconstructed now
        out[lo - out_start:] = y[lo - win_start:avail - self.fade_n]
        if self._pending is not None and lo == out_start:
            w = np.linspace(0, 1, self.fade_n + 2)[1:-1, None]
            out[:self.fade_n] = w * out[:self.fade_n] + (1 - w) * self._pending  # NaN stays NaN
        elif self._pending is not None:  # fell behind by more than a window: keep the old tail
            out[:self.fade_n] = self._pending
            self.skipped_samples += lo - prev
        self._pending = y[avail - self.fade_n:].copy()
        self._done = end
        return OutputChunk(out_start, out, flagged, ms)

    def flush(self) -> OutputChunk | None:
        """The held-back tail of the last window (end of stream)."""
        if self._pending is None or self._done is None:
            return None
        chunk = OutputChunk(self._done - self.fade_n, self._pending, False, 0.0)
        self._pending = None
        return chunk


def per_lead_metrics(pred_mv: np.ndarray, ref_mv: np.ndarray, names: tuple[str, ...] = STANDARD_LEADS
                     ) -> dict[str, dict[str, float]]:
    """Per-lead Pearson r and RMSE (µV) over the samples where both are finite.

    (A small local version of medge.quantize.metrics: apps do not import quantize.)
    """
    out: dict[str, dict[str, float]] = {}
    for k, name in enumerate(names):
        p, r = np.asarray(pred_mv[k], dtype=np.float64), np.asarray(ref_mv[k], dtype=np.float64)
        ok = np.isfinite(p) & np.isfinite(r)
        p, r = p[ok], r[ok]
        if p.size < 2 or p.std() == 0 or r.std() == 0:
            corr = float("nan")
        else:
            corr = float(np.corrcoef(p, r)[0, 1])
        rmse = float(np.sqrt(np.mean((p - r) ** 2)) * 1e3) if p.size else float("nan")
        out[name] = {"pearson_r": corr, "rmse_uv": rmse}
    return out


def mean_r(per_lead: dict[str, dict[str, float]], exclude: tuple[str, ...]) -> float:
    """Mean Pearson r over the leads not in `exclude` (the model's input leads)."""
    vals = [v["pearson_r"] for k, v in per_lead.items() if k not in exclude and v["pearson_r"] == v["pearson_r"]]
    return float(np.mean(vals)) if vals else float("nan")
