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
from dataclasses import dataclass

import numpy as np

from medge.common.errors import DataError
from medge.calibration.preprocess import resample_signal

STANDARD_LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
DERIVED_LEADS: tuple[str, ...] = ("III", "aVR", "aVL", "aVF")
FADE_S = 0.02
R_WARN = 0.8  # a computed lead whose Pearson r against the recorded lead is below this is warned about


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
    win = round(model.samples * rate_hz / model.rate_hz)
    if total <= win:
        return model.window(x, rate_hz)
    overlap = min(round(overlap_s * rate_hz), win // 2)
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
class WindowSnapshot:
    """A copy of the newest window of filtered input, handed from capture to reconstruction."""

    values_mv: np.ndarray  # (3, avail) filtered mV, NaN where missing
    arrival: np.ndarray  # (avail,) arrival clock of each sample (NaN for missing samples)
    end: int  # absolute index one past the newest sample
    first: int  # absolute index of the stream's first sample


class InputWindow:
    """Capture side: the newest `window_n` samples of filtered input and their arrival times."""

    def __init__(self, window_n: int, hop_n: int) -> None:
        self.window_n, self.hop_n = window_n, hop_n
        self._buf = np.full((3, window_n), np.nan)
        self._arrival = np.full(window_n, np.nan)
        self.first: int | None = None
        self.end = 0
        self._last_snapshot = 0

    def push(self, start: int, filtered_mv: np.ndarray, arrival: float) -> None:
        """Append (n, 3) filtered samples starting at absolute index `start` (≥ the window end)."""
        if self.first is None:
            self.first, self.end, self._last_snapshot = start, start, start
        n = len(filtered_mv)
        shift = start + n - self.end  # the window moves left by the gap plus the new samples
        for arr in (self._buf, self._arrival):
            if shift >= self.window_n:
                arr[...] = np.nan
            elif shift > 0:
                arr[..., :-shift] = arr[..., shift:].copy()
                arr[..., -shift:] = np.nan
        take = min(n, self.window_n)
        self._buf[:, -take:] = filtered_mv[-take:].T
        self._arrival[-take:] = arrival
        self.end = start + n

    def hop_ready(self) -> bool:
        """Whether a hop of new samples arrived since the last snapshot."""
        return self.first is not None and self.end - self._last_snapshot >= self.hop_n

    def snapshot(self) -> WindowSnapshot:
        """Copy of the filled part of the window."""
        assert self.first is not None
        avail = min(self.window_n, self.end - self.first)
        self._last_snapshot = self.end
        return WindowSnapshot(self._buf[:, -avail:].copy(), self._arrival[-avail:].copy(), self.end, self.first)


@dataclass
class OutputChunk:
    """Reconstructed samples [start, start + len) in STANDARD_LEADS order (mV)."""

    start: int
    values_mv: np.ndarray  # (n, 12)
    flagged: bool  # the window touched missing input
    reconstruct_ms: float
    arrival: np.ndarray | None = None  # (n,) arrival clock of each input sample, when known


class StreamingReconstructor:
    """Reconstruction side: one window per snapshot, the newest samples emitted, hops cross-faded."""

    def __init__(self, model: LeadModel, rate_hz: float, hop_s: float = 1.0, fade_s: float = FADE_S) -> None:
        self.model, self.rate_hz = model, rate_hz
        self.window_n = round(model.samples * rate_hz / model.rate_hz)
        self.hop_n = max(1, round(hop_s * rate_hz))
        self.fade_n = max(1, round(fade_s * rate_hz))
        if self.hop_n < self.fade_n or self.hop_n > self.window_n - self.fade_n:
            raise DataError(f"--hop {hop_s:g} s must be between {fade_s:g} s and the window "
                            f"({self.window_n / rate_hz:g} s) minus {fade_s:g} s")
        self._done: int | None = None  # window end of the last reconstruction
        self._pending: np.ndarray | None = None  # held-back tail (fade, 12)
        self._pending_arrival: np.ndarray | None = None
        self.skipped_samples = 0

    def step(self, snap: WindowSnapshot) -> OutputChunk:
        """Reconstruct `snap`; emit [last end − fade, end − fade), cross-fading the held-back tail."""
        end, avail = snap.end, snap.values_mv.shape[1]
        prev = snap.first if self._done is None else self._done
        t0 = time.perf_counter()
        y = self.model.window(snap.values_mv, self.rate_hz).T  # (avail, 12)
        ms = (time.perf_counter() - t0) * 1e3
        flagged = bool(np.isnan(snap.values_mv).any())
        out_start = max(prev - self.fade_n, snap.first)
        out = np.full((end - self.fade_n - out_start, len(STANDARD_LEADS)), np.nan)
        arrival = np.full(len(out), np.nan)
        win_start = end - avail
        lo = max(out_start, win_start)  # samples older than the window cannot be reconstructed now
        out[lo - out_start:] = y[lo - win_start:avail - self.fade_n]
        arrival[lo - out_start:] = snap.arrival[lo - win_start:avail - self.fade_n]
        if self._pending is not None and lo == out_start:
            w = np.linspace(0, 1, self.fade_n + 2)[1:-1, None]
            out[:self.fade_n] = w * out[:self.fade_n] + (1 - w) * self._pending  # NaN stays NaN
        elif self._pending is not None:  # fell behind by more than a window: keep the old tail
            out[:self.fade_n] = self._pending
            arrival[:self.fade_n] = self._pending_arrival
            self.skipped_samples += lo - prev
        self._pending = y[avail - self.fade_n:].copy()
        self._pending_arrival = snap.arrival[avail - self.fade_n:].copy()
        self._done = end
        return OutputChunk(out_start, out, flagged, ms, arrival)

    @property
    def end(self) -> int | None:
        """Sample index just past the last reconstructed window (None before the first)."""
        return self._done

    def flush(self) -> OutputChunk | None:
        """The held-back tail of the last window (end of stream)."""
        if self._pending is None or self._done is None:
            return None
        chunk = OutputChunk(self._done - self.fade_n, self._pending, False, 0.0, self._pending_arrival)
        self._pending = None
        return chunk


def mean_r(per_lead: dict[str, dict[str, float]], exclude: tuple[str, ...]) -> float:
    """Mean Pearson r over the leads not in `exclude` (the model's input leads)."""
    vals = [v["pearson_r"] for k, v in per_lead.items() if k not in exclude and v["pearson_r"] == v["pearson_r"]]
    return float(np.mean(vals)) if vals else float("nan")
