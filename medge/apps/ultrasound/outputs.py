"""Outputs of the ultrasound app besides the browser: an atomic video recorder and an OpenCV window."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from medge.common.errors import MedgeError, UsageError

FOURCC_FOR_SUFFIX = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class VideoRecorder:
    """Writes BGR frames to a temporary file beside `path` and renames it onto `path` on `finish()`.

    An interrupted or failed recording leaves no half-written file at `path`.
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC_FOR_SUFFIX:
            raise UsageError(f"--record {self.path.name}: unknown video type; use one of {', '.join(sorted(FOURCC_FOR_SUFFIX))}")
        if not self.path.parent.exists():
            raise MedgeError(f"--record {self.path}: folder {self.path.parent} does not exist; create it first")
        self.fps = fps if fps and fps > 0 else 30.0
        self._tmp = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:8]}.partial{self.path.suffix}")
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        """Append one frame (the first frame fixes the size; later frames are resized to it)."""
        import cv2

        if self._writer is None:
            self._size = (bgr.shape[1], bgr.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*FOURCC_FOR_SUFFIX[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                self._writer = None
                raise MedgeError(f"cannot write {self.path.name}: OpenCV has no encoder for it here; record to .avi instead")
        if (bgr.shape[1], bgr.shape[0]) != self._size:
            bgr = cv2.resize(bgr, self._size)
        self._writer.write(bgr)
        self.frames += 1

    def finish(self) -> bool:
        """Close the file and move it into place; False (and nothing written) when no frame came."""
        if self._writer is None:
            return False
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)
        return True

    def discard(self) -> None:
        """Drop a partial recording."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


def check_window_support() -> None:
    """One-line error when this OpenCV build or session cannot open a window."""
    import cv2

    info = cv2.getBuildInformation()
    gui = info.split("GUI:", 1)[1].split("\n", 1)[0].strip() if "GUI:" in info else ""
    if not gui or gui.upper() == "NONE":
        raise MedgeError("--view window needs OpenCV with GUI support (pip install opencv-python instead of "
                         "opencv-python-headless) and a display; on a headless device use --view browser")
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise MedgeError("--view window needs a display (DISPLAY is not set); use --view browser on a headless device")


class WindowView:
    """An OpenCV window, created and driven in the sink's own thread."""

    def __init__(self, title: str = "medge ultrasound") -> None:
        self.title = title
        self._open = False

    def show(self, bgr: np.ndarray) -> None:
        import cv2

        if not self._open:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            self._open = True
        cv2.imshow(self.title, bgr)
        cv2.waitKey(1)

    def close(self) -> None:
        if self._open:
            import cv2

            cv2.destroyWindow(self.title)
            self._open = False
