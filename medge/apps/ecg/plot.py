"""Pictures of ECGs: the standard 12-lead paper plot (PNG) and the live strip for the browser view.

`paper_plot` draws ECG paper at 25 mm/s and 10 mm/mV (1 mm minor, 5 mm major grid), a 3×4 layout
(I II III | aVR aVL aVF | V1 V2 V3 | V4 V5 V6, 2.5 s each) and a 10 s rhythm strip of lead II.
Leads that were reconstructed are labelled with ``*``, derived ones with ``†``; missing samples
are left blank and shaded.  With a `reference` (the recorded 12 leads, when the input has them)
every computed lead is drawn over its recorded lead in blue, labelled with its Pearson r.  `live_strip` renders the newest seconds of all twelve leads with
OpenCV, cheap enough to run every hop.
"""

from __future__ import annotations

import os

import numpy as np

from medge.apps.ecg.reconstruct import R_WARN
from medge.common.fileio import atomic_path
from medge.common.registry import import_optional

LAYOUT = (("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"))
MM_PER_S, MM_PER_MV = 25.0, 10.0
COLUMN_S = 2.5
ROW_MM = 35.0
RHYTHM_LEAD = "II"
REFERENCE_COLOUR = "#1f5fd0"


def paper_plot(path: str | os.PathLike, leads: tuple[str, ...], signal_mv: np.ndarray, rate_hz: float, *,
               title: str = "", reconstructed: tuple[str, ...] = (), derived: tuple[str, ...] = (),
               start_s: float = 0.0, reference: np.ndarray | None = None, scores: dict[str, float] | None = None
               ) -> None:
    """Write a 12-lead paper plot of (12, N) mV (10 s from `start_s`) as a PNG, atomically.

    `reference` (12, N) mV is drawn under each computed (reconstructed or derived) lead; `scores`
    (lead → Pearson r) are printed beside their labels.
    """
    matplotlib = import_optional("matplotlib", what="plotting ECGs")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    sig = np.asarray(signal_mv, dtype=np.float64)
    total_s = 4 * COLUMN_S
    width_mm, height_mm = total_s * MM_PER_S + 10, ROW_MM * 4 + 12
    fig = plt.figure(figsize=(width_mm / 25.4, height_mm / 25.4), dpi=150)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(-5, width_mm - 5)
    ax.set_ylim(0, height_mm)
    ax.set_axis_off()
    for x in np.arange(0, total_s * MM_PER_S + 0.01, 1.0):
        ax.axvline(x, color="#f4c7c7" if x % 5 else "#e08080", lw=0.3 if x % 5 else 0.6, zorder=0)
    for y in np.arange(0, ROW_MM * 4 + 0.01, 1.0):
        ax.axhline(y, xmax=1, color="#f4c7c7" if y % 5 else "#e08080", lw=0.3 if y % 5 else 0.6, zorder=0)
    first = round(start_s * rate_hz)
    computed = set(reconstructed) | set(derived)
    scores = scores or {}

    def trace(lead: str, t0: float, t1: float, x0_mm: float, base_mm: float) -> None:
        k = leads.index(lead)
        a, b = first + round(t0 * rate_hz), first + round(t1 * rate_hz)
        seg = sig[k, a:b]
        if seg.size == 0:
            return
        x = x0_mm + np.arange(seg.size) / rate_hz * MM_PER_S
        if reference is not None and lead in computed:
            ax.plot(x, base_mm + np.asarray(reference[k, a:b]) * MM_PER_MV, color=REFERENCE_COLOUR, lw=0.6,
                    zorder=2)
        ax.plot(x, base_mm + seg * MM_PER_MV, color="black", lw=0.6, zorder=2)
        missing = ~np.isfinite(seg)
        if missing.any():
            ax.fill_between(x, base_mm - ROW_MM / 2, base_mm + ROW_MM / 2, where=missing, color="#9090ff",
                            alpha=0.35, zorder=1, step="mid")
        mark = "*" if lead in reconstructed else "†" if lead in derived else ""
        r = scores.get(lead)
        known = r is not None and r == r  # NaN: no score to show
        ax.text(x0_mm + 1, base_mm + ROW_MM * 0.32, lead + mark + (f"  r {r:.2f}" if known else ""), fontsize=7,
                zorder=3, color="#c00000" if known and r < R_WARN else "black")

    for col, group in enumerate(LAYOUT):
        for row, lead in enumerate(group):
            base = ROW_MM * (3.5 - row)
            trace(lead, col * COLUMN_S, (col + 1) * COLUMN_S, col * COLUMN_S * MM_PER_S, base)
    trace(RHYTHM_LEAD, 0.0, total_s, 0.0, ROW_MM * 0.5)
    note = "25 mm/s, 10 mm/mV"
    if reconstructed:
        note += "   * reconstructed"
    if derived:
        note += "   † derived from I and II"
    if reference is not None:
        note += "   blue: recorded lead"
    ax.text(0, height_mm - 6, f"{title}   {note}".strip(), fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)
    plt.close(fig)


def live_strip(leads: tuple[str, ...], signal_mv: np.ndarray, rate_hz: float, *, width: int = 960,
               row_px: int = 56, mv_px: float = 28.0, flagged: bool = False, banner: str = "") -> np.ndarray:
    """(12, N) mV → a BGR uint8 image: one row per lead, newest sample at the right edge.

    `banner` (e.g. "SIGNAL LOST FOR 8 s") is drawn in red across the top, over the time label.
    """
    cv2 = import_optional("cv2", what="drawing the live ECG strip")
    sig = np.asarray(signal_mv, dtype=np.float64)
    img = np.full((row_px * len(leads) + 24, width, 3), 255, dtype=np.uint8)
    n = sig.shape[1]
    xs = np.linspace(0, width - 1, n) if n > 1 else np.zeros(1)
    for k, lead in enumerate(leads):
        base = 24 + row_px * k + row_px // 2
        cv2.line(img, (0, base), (width - 1, base), (225, 225, 245), 1)
        y = base - np.nan_to_num(sig[k], nan=np.nan) * mv_px
        ok = np.isfinite(y)
        pts = np.stack([xs, np.clip(np.where(ok, y, base), 0, img.shape[0] - 1)], axis=1).astype(np.int32)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a > 1:
                cv2.polylines(img, [pts[a:b]], False, (20, 20, 20), 1, cv2.LINE_AA)
        cv2.putText(img, lead, (4, base - row_px // 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 160), 1, cv2.LINE_AA)
    label = banner or f"{n / rate_hz:.1f} s  " + ("WINDOW TOUCHES A GAP" if flagged else "")
    alarm = flagged or bool(banner)
    cv2.putText(img, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 200) if alarm else (60, 60, 60),
                2 if banner else 1)
    return img
