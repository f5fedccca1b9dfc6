"""Frame sizes of the ultrasound app: the model's input and the view's, each made in as few OpenCV
calls as the sizes allow, and the overlay drawn (and JPEG-encoded) only when a consumer asks for it.

The analysis (model, lesion mask and area) works from the source frame; the view, the recording and
the window show the overlay at the view's size (`--view-size`, default: the frame halved until it
fits 1280×720).  A browser view encodes a frame only when a client asks for one (`LazyFrame`), so with
no client connected nothing is drawn or encoded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medge.apps.ultrasound.overlay import Segmentation, draw_overlay
from medge.apps.pipeline import clock
from medge.apps.view import encode_jpeg

VIEW_MAX = (1280, 720)  # the default view fits this box


def downscale(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` resized to `width`×`height` with area averaging: halvings (OpenCV's fast 2× path) while
    both sides stay at least the target, then one last area resize (none when the size already fits)."""
    import cv2

    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height and image.shape[1] % 2 == 0 \
            and image.shape[0] % 2 == 0:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[1] >= width and image.shape[0] >= height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def default_view_size(width: int, height: int) -> tuple[int, int]:
    """The frame size halved until it fits `VIEW_MAX` (1920×1080 → 960×540; 640×480 stays)."""
    while (width > VIEW_MAX[0] or height > VIEW_MAX[1]) and width >= 32 and height >= 32:
        width, height = width // 2, height // 2
    return width, height


@dataclass
class Snapshot:
    """What the overlay of one processed frame is drawn from."""

    image: np.ndarray  # the source frame, uint8 grey
    seg: Segmentation | None
    number: int
    t_acquired: float
    screened_out: bool
    notice: str | None


class Renderer:
    """Draws overlays at the view's size (`size`, or the frame's when None) and encodes them as JPEG.

    Thread-safe: each thread draws into its own reused BGR buffer.  `encoded` counts JPEG encodes.
    `on_encoded(snapshot)` is called after each encode of a frame (e.g. to time it).
    """

    def __init__(self, size: tuple[int, int] | None, quality: int = 80,
                 on_encoded: Callable[[Snapshot], None] | None = None) -> None:
        self.size, self.quality, self._on_encoded = size, quality, on_encoded
        self.encoded = 0
        self._count = threading.Lock()
        self._local = threading.local()

    def view_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the view for a frame of `width`×`height`."""
        return self.size or default_view_size(width, height)

    def bgr(self, snap: Snapshot) -> np.ndarray:
        """The overlay of `snap` at the view's size (a buffer this thread reuses: use it before the next call)."""
        h, w = snap.image.shape
        vw, vh = self.view_size(w, h)
        grey = downscale(snap.image, vw, vh)
        buffer = getattr(self._local, "bgr", None)
        img = draw_overlay(grey, snap.seg, frame_number=snap.number, latency_ms=(clock() - snap.t_acquired) * 1e3,
                           screened_out=snap.screened_out, notice=snap.notice, out=buffer)
        self._local.bgr = img
        return img

    def jpeg(self, image: np.ndarray, snap: Snapshot | None = None) -> bytes:
        """JPEG bytes of a BGR image (counted; `on_encoded` is told about `snap`)."""
        data = encode_jpeg(image, self.quality)
        with self._count:
            self.encoded += 1
        if snap is not None and self._on_encoded is not None:
            self._on_encoded(snap)
        return data

    def lazy_jpeg(self, snap: Snapshot) -> Callable[[], bytes]:
        """A function that draws and encodes `snap` when called (by the view, for a client)."""
        return lambda: self.jpeg(self.bgr(snap), snap)

    def describe(self, width: int, height: int) -> dict[str, Any]:
        """``{"size": [w, h], "frames_encoded": n}`` for the report."""
        return {"size": list(self.view_size(width, height)), "frames_encoded": self.encoded}
