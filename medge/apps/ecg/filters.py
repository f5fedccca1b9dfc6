"""Causal ECG filters that keep their state across chunks: high-pass 0.05 Hz, optional mains notch.

`StreamFilter.process` filters (n, leads) chunks with `scipy.signal.sosfilt` and carries the
filter state (``zi``) from one chunk to the next, so the output is identical to filtering the whole
record at once -- there is no step at chunk boundaries.  A missing sample (NaN) stays NaN; the
lead's filter restarts at the next valid sample from its steady state for that value, so a gap
never smears NaN (or a jump) into the samples after it.  `filter_record` applies the same chain to a
whole (leads, samples) record, which is what offline reconstruction and `fit` use.
"""

from __future__ import annotations

import numpy as np

from medge.common.errors import UsageError

HIGHPASS_HZ = 0.05
NOTCH_Q = 30.0


def design_sos(rate_hz: float, mains_hz: float | None = None, highpass_hz: float = HIGHPASS_HZ) -> np.ndarray:
    """Second-order sections: 2nd-order Butterworth high-pass, plus a notch at `mains_hz`."""
    from scipy.signal import butter, iirnotch, tf2sos

    sos = butter(2, highpass_hz, btype="highpass", fs=rate_hz, output="sos")
    if mains_hz:
        if mains_hz not in (50, 60):
            raise UsageError(f"--mains {mains_hz:g}: use 50 or 60 (Hz)")
        if mains_hz >= rate_hz / 2:
            raise UsageError(f"--mains {mains_hz:g} Hz is above the Nyquist frequency of a {rate_hz:g} Hz stream")
        b, a = iirnotch(mains_hz, NOTCH_Q, fs=rate_hz)
        sos = np.vstack([sos, tf2sos(b, a)])
    return sos


class StreamFilter:
    """Per-lead stateful filter over (n, leads) chunks."""

    def __init__(self, leads: int, rate_hz: float, mains_hz: float | None = None) -> None:
        from scipy.signal import sosfilt_zi

        self.sos = design_sos(rate_hz, mains_hz)
        self._zi_unit = sosfilt_zi(self.sos)  # (sections, 2) steady state for a unit step
        self._zi = [None] * leads  # per lead: state, or None when it must restart

    def process(self, chunk: np.ndarray) -> np.ndarray:
        """Filter an (n, leads) chunk in µV or mV; NaN in → NaN out."""
        from scipy.signal import sosfilt

        x = np.asarray(chunk, dtype=np.float64)
        out = np.full_like(x, np.nan)
        for lead in range(x.shape[1]):
            col = x[:, lead]
            finite = np.isfinite(col)
            if finite.all():
                out[:, lead] = self._run(lead, col, sosfilt)
                continue
            # split into runs of valid samples; every NaN resets the lead's filter
            edges = np.flatnonzero(np.diff(np.concatenate([[False], finite, [False]]).astype(np.int8)))
            for begin, end in zip(edges[::2], edges[1::2]):
                if begin > 0:
                    self._zi[lead] = None
                out[begin:end, lead] = self._run(lead, col[begin:end], sosfilt)
            if not finite[-1]:
                self._zi[lead] = None
        return out

    def reset(self, lead: int | None = None) -> None:
        """Restart one lead's filter (or all) at the next sample, e.g. after a gap in the stream."""
        for i in range(len(self._zi)) if lead is None else [lead]:
            self._zi[i] = None

    def _run(self, lead: int, col: np.ndarray, sosfilt) -> np.ndarray:
        zi = self._zi[lead]
        if zi is None:
            zi = self._zi_unit * col[0]
        y, self._zi[lead] = sosfilt(self.sos, col, zi=zi)
        return y


def filter_record(signal: np.ndarray, rate_hz: float, mains_hz: float | None = None) -> np.ndarray:
    """(leads, samples) → the same chain `StreamFilter` applies live, in one call."""
    sig = np.asarray(signal, dtype=np.float64)
    return StreamFilter(sig.shape[0], rate_hz, mains_hz).process(sig.T).T
