"""Draw the segmentation on the B-mode frame: contour, translucent fill, lesion area, frame number
and pipeline latency burned into the corner (so glass-to-glass latency can be filmed), each label on
a dark box so that it reads on any background, a "no target" badge for frames the pre-screen skipped
and a notice badge (e.g. the signal just came back).  Regions smaller than the minimum lesion area
are not a lesion.  `no_signal_card` is what the view shows while the source delivers nothing.  Nothing from
the DICOM header is drawn.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from medge.common.errors import UsageError

FILL_BGR = (40, 200, 255)  # amber
CONTOUR_BGR = (0, 255, 255)
BADGE_BGR = (60, 60, 200)
NO_SIGNAL_BGR = (30, 30, 220)  # red
TEXT_BOX_BGR = (0, 0, 0)  # behind every label


@dataclass
class Segmentation:
    """A binary lesion mask at frame resolution and its area.  Only the region that can hold lesion
    pixels is stored (`roi`, its top-left corner at `origin` (x, y) in a frame of `shape` (H, W));
    `mask` is the whole frame."""

    roi: np.ndarray  # uint8 (h, w), 1 = lesion
    origin: tuple[int, int]
    shape: tuple[int, int]
    area_px: int
    area_mm2: float | None

    @property
    def mask(self) -> np.ndarray:
        """uint8 (H, W) mask of the whole frame, 1 = lesion."""
        full = np.zeros(self.shape, np.uint8)
        x, y = self.origin
        full[y:y + self.roi.shape[0], x:x + self.roi.shape[1]] = self.roi
        return full


def parse_min_area(text: str) -> tuple[float, str]:
    """``"25px"`` / ``"7mm2"`` (also ``mm²``, spaces allowed) → (value, ``"px"`` | ``"mm2"``)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(px|mm2|mm²)\s*", text or "", flags=re.I)
    if not m:
        raise UsageError(f"--min-lesion-area {text!r}: expected an area in px or mm², e.g. 25px or 7mm2")
    return float(m.group(1)), "px" if m.group(2).lower() == "px" else "mm2"


def min_area_px(min_area: tuple[float, str], mm_per_px_xy: list[float] | None) -> float:
    """The smallest lesion, in pixels of a frame with spacing `mm_per_px_xy`, for an area in px or mm²."""
    value, unit = min_area
    if unit == "px":
        return value
    if not mm_per_px_xy:
        raise ValueError("an area in mm² needs a calibrated frame")
    return value / (mm_per_px_xy[0] * mm_per_px_xy[1])


def _taps(size_out: int, size_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps (low index, high index) of each output pixel, as `cv2.resize(..., INTER_LINEAR)`
    computes them (pixel centres aligned, edges replicated)."""
    f = (np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5
    low = np.clip(np.floor(f).astype(np.int64), 0, size_in - 1)
    return low, np.minimum(low + 1, size_in - 1)


def mask_at_frame(prob: np.ndarray, height: int, width: int, mm_per_px_xy: list[float] | None,
                  threshold: float = 0.5, min_px: float = 0.0) -> Segmentation:
    """Upsample a model-resolution probability map to the frame (bilinear, `cv2.resize` INTER_LINEAR)
    and threshold it; regions smaller than `min_px` frame pixels are not a lesion (they are removed
    from the mask).

    A region is a connected component (8-connected) of the model's own mask, ``prob >= threshold``
    at the model's resolution: the frame pixels that belong to it are those whose bilinear taps
    reach it, and its area is counted in frame pixels.  The map is upsampled whole (one
    `cv2.resize`, about 1 ms at 1080p), but only the frame pixels whose taps touch a model pixel at
    or above the threshold can be lesion, so only that region is thresholded, and the regions are
    labelled and measured at the model's resolution (a 256² map) rather than on the frame."""
    import cv2

    plane = np.ascontiguousarray(np.asarray(prob, dtype=np.float32).reshape(prob.shape[-2], prob.shape[-1]))
    coarse = (plane >= threshold).astype(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(coarse)
    if bw == 0 or bh == 0:
        return Segmentation(np.zeros((0, 0), np.uint8), (0, 0), (height, width), 0, 0.0 if mm_per_px_xy else None)
    spans, taps = [], []
    for size_out, size_in, lo, hi in ((height, plane.shape[0], by, by + bh - 1), (width, plane.shape[1], bx, bx + bw - 1)):
        low, high = _taps(size_out, size_in)
        inside = np.flatnonzero((low <= hi) & (high >= lo))  # contiguous: the taps only grow
        spans.append(slice(int(inside[0]), int(inside[-1]) + 1))
        taps.append(low[spans[-1]])
    ys, xs = spans
    values = cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR)[ys, xs]
    mask = (values >= threshold).view(np.uint8)
    if min_px > 0 and mask.any():
        mask, area_px = _drop_small_regions(coarse, mask, taps[0], taps[1], min_px)
    else:
        area_px = int(np.count_nonzero(mask))
    area_mm2 = area_px * mm_per_px_xy[0] * mm_per_px_xy[1] if mm_per_px_xy else None
    return Segmentation(mask, (xs.start, ys.start), (height, width), area_px, area_mm2)


def _runs(low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model rows (or columns) that a non-decreasing run of low taps covers, and where each run starts."""
    starts = np.flatnonzero(np.r_[True, low[1:] != low[:-1]])
    return low[starts], starts


def _drop_small_regions(coarse: np.ndarray, mask: np.ndarray, low_y: np.ndarray, low_x: np.ndarray,
                        min_px: float) -> tuple[np.ndarray, int]:
    """`mask` (frame pixels, rows `low_y`/columns `low_x` by their low bilinear tap) without the regions
    of `coarse` (the model's mask) that cover fewer than `min_px` of its pixels, and the area left.

    Every frame pixel at or above the threshold has a tap at or above it, and the taps of one pixel
    (a 2×2 block of model pixels) are 8-neighbours, so all of its taps in the model's mask lie in
    one region: the block's only nonzero region label.  Frame pixels sharing a low tap share that
    block, so each region's area is a sum of block counts, read from one integral image, and the
    small regions are cleared block by block."""
    import cv2

    count, regions = cv2.connectedComponents(coarse, connectivity=8, ltype=cv2.CV_32S)
    edge = np.pad(regions, ((0, 1), (0, 1)), mode="edge")  # the high tap is clamped at the last row/column
    block = np.maximum(np.maximum(edge[:-1, :-1], edge[:-1, 1:]), np.maximum(edge[1:, :-1], edge[1:, 1:]))
    rows, row_starts = _runs(low_y)
    cols, col_starts = _runs(low_x)
    block_region = block[np.ix_(rows, cols)]  # 0 where no tap is in the model's mask
    ry, cx = np.r_[row_starts, mask.shape[0]], np.r_[col_starts, mask.shape[1]]
    sums = cv2.integral(mask)[ry[:, None], cx[None, :]]
    block_count = sums[1:, 1:] - sums[:-1, 1:] - sums[1:, :-1] + sums[:-1, :-1]
    area = np.bincount(block_region.ravel(), weights=block_count.ravel(), minlength=count)
    keep = area >= min_px
    keep[0] = False  # a pixel at the threshold only by rounding, with no tap there, is no region's
    if not (area[~keep] > 0).any():  # nothing to clear
        return mask, int(area[keep].sum())
    block_keep = keep[block_region].astype(np.uint8)
    mask &= np.repeat(np.repeat(block_keep, np.diff(ry), axis=0), np.diff(cx), axis=1)
    return mask, int(area[keep].sum())


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int]) -> None:
    """`text` at baseline `org` on a dark box, readable on any background."""
    import cv2

    thickness = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = org
    pad = max(2, int(round(4 * scale)))
    cv2.rectangle(img, (max(0, x - pad), max(0, y - th - pad)), (min(img.shape[1] - 1, x + tw + pad),
                  min(img.shape[0] - 1, y + base + pad)), TEXT_BOX_BGR, -1)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def _badge(img: np.ndarray, label: str, row: int, scale: float, color: tuple[int, int, int]) -> None:
    """A filled badge with `label` in the top-right corner, `row` badges down."""
    import cv2

    h, w = img.shape[:2]
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(round(scale * 2))))
    x0, y0 = max(0, w - tw - 14), 6 + row * (th + 16)
    cv2.rectangle(img, (x0, y0), (w - 4, y0 + th + 10), color, -1)
    cv2.putText(img, label, (x0 + 5, y0 + th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                max(1, int(round(scale * 2))), cv2.LINE_AA)


def no_signal_card(last: np.ndarray | None, width: int, height: int, label: str = "NO SIGNAL") -> np.ndarray:
    """BGR card for the view while the source delivers nothing: the last overlay frame dimmed (or
    black at `width`×`height`) with a red `label` badge across the middle."""
    import cv2

    img = (last // 3) if last is not None else np.zeros((height, width, 3), np.uint8)
    h, w = img.shape[:2]
    scale = max(0.5, min(w, h) / 240.0)
    thickness = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x0, y0 = max(0, (w - tw) // 2 - 10), max(0, (h - th) // 2 - 10)
    cv2.rectangle(img, (x0, y0), (min(w - 1, x0 + tw + 20), min(h - 1, y0 + th + 20)), NO_SIGNAL_BGR, -1)
    cv2.putText(img, label, (x0 + 10, y0 + th + 10), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return img


def _mask_at_view(seg: Segmentation, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The lesion ROI of `seg` scaled to an image of `height`×`width` (nearest neighbour) and its origin."""
    import cv2

    sy, sx = height / seg.shape[0], width / seg.shape[1]
    x, y = seg.origin
    x0, y0 = int(x * sx), int(y * sy)
    x1 = max(x0 + 1, min(width, int(round((x + seg.roi.shape[1]) * sx))))
    y1 = max(y0 + 1, min(height, int(round((y + seg.roi.shape[0]) * sy))))
    if (y1 - y0, x1 - x0) == seg.roi.shape:
        return seg.roi, (x0, y0)
    return cv2.resize(seg.roi, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST), (x0, y0)


@functools.lru_cache(maxsize=8)
def _tint_matrix(alpha: float) -> np.ndarray:
    """The 3×4 `cv2.transform` matrix that blends a BGR pixel with `FILL_BGR` by `alpha`."""
    return np.hstack([np.eye(3) * (1.0 - alpha), alpha * np.array(FILL_BGR, float)[:, None]]).astype(np.float32)


def draw_overlay(frame: np.ndarray, seg: Segmentation | None, *, frame_number: int, latency_ms: float,
                 screened_out: bool = False, notice: str | None = None, alpha: float = 0.35,
                 out: np.ndarray | None = None) -> np.ndarray:
    """BGR uint8 image of grey `frame` with the overlay (see module docstring).

    `frame` may be smaller than the frame `seg` was computed for (the view's size): the lesion is
    scaled to it, the area stays the frame's.  `out` is a BGR buffer of `frame`'s size to draw into."""
    import cv2

    img = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR, dst=out if out is not None and out.shape[:2] == frame.shape else None)
    h, w = frame.shape
    scale = max(0.35, min(w, h) / 900.0)
    if seg is not None and seg.area_px:
        view_mask, (ox, oy) = _mask_at_view(seg, h, w)
        x, y, bw, bh = cv2.boundingRect(view_mask)
        if bw and bh:
            roi = img[oy + y:oy + y + bh, ox + x:ox + x + bw]
            tinted = cv2.transform(roi, _tint_matrix(alpha))  # (1 - alpha)·pixel + alpha·FILL_BGR, one pass
            cv2.copyTo(tinted, view_mask[y:y + bh, x:x + bw], roi)  # in place: roi is a view of img
            contours, _ = cv2.findContours(view_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(ox, oy))
            cv2.drawContours(img, contours, -1, CONTOUR_BGR, max(1, int(round(scale * 2))), cv2.LINE_AA)
        area = f"lesion {seg.area_mm2:.1f} mm2" if seg.area_mm2 is not None else f"lesion {seg.area_px} px"
        _text(img, area, (6, h - 8), scale, (255, 255, 255))
    elif seg is not None:
        _text(img, "no lesion", (6, h - 8), scale, (200, 200, 200))
    if screened_out:
        _badge(img, "no target", 0, scale, BADGE_BGR)
    if notice:
        _badge(img, notice, 1 if screened_out else 0, scale, NO_SIGNAL_BGR)
    _text(img, f"#{frame_number}  {latency_ms:5.1f} ms", (6, int(22 * scale / 0.6)), scale, (255, 255, 255))
    return img
