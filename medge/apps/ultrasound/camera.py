"""V4L2 cameras and capture cards for the ultrasound app: pixel format, size and rate negotiated in
V4L2's order and read back, raw MJPG/YUYV frames turned into grey without a colour conversion."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medge.apps.pipeline import Corrupt
from medge.apps.ultrasound.sources import Frame, FrameSource, SourceInfo, to_grey_u8
from medge.common.errors import DataError, UsageError


CAMERA_FORMATS = {"MJPG": "Motion JPEG (decoded straight to grey)", "YUYV": "YUV 4:2:2 (its Y plane is the grey image)"}


def parse_camera_format(text: str) -> str:
    """``--camera-format``: MJPG (also MJPEG) or YUYV (also YUY2), upper-cased."""
    code = {"MJPEG": "MJPG", "YUY2": "YUYV"}.get(text.strip().upper(), text.strip().upper())
    if code not in CAMERA_FORMATS:
        raise UsageError(f"--camera-format {text!r}: expected MJPG or YUYV (what V4L2 capture cards and USB cameras "
                         "deliver at 1080p)")
    return code


def fourcc_text(value: float) -> str:
    """The four characters of an OpenCV ``CAP_PROP_FOURCC`` value ('' when unset)."""
    code = int(value or 0)
    return code.to_bytes(4, "little").decode("ascii", "replace").strip("\x00") if code > 0 else ""


def raw_to_grey(frame: np.ndarray, fourcc: str, width: int, height: int) -> np.ndarray | None:
    """uint8 grey (H, W) from what a V4L2 capture gives with ``CAP_PROP_CONVERT_RGB`` off: a Motion JPEG
    buffer (decoded to grey only, no colour conversion), packed YUYV (its Y bytes, no decode at all),
    or an image OpenCV already converted (BGR or grey).  None when a JPEG does not decode."""
    import cv2

    if fourcc == "MJPG" and (frame.ndim == 1 or frame.shape[0] == 1):
        return cv2.imdecode(frame.reshape(-1), cv2.IMREAD_GRAYSCALE) if frame.size else None
    if fourcc == "YUYV" and frame.size == width * height * 2 and (frame.ndim < 3 or frame.shape[-1] == 2):
        return np.ascontiguousarray(frame.reshape(height, width * 2)[:, 0::2])
    return to_grey_u8(frame)


class CameraSource(FrameSource):
    """A V4L2 camera (HDMI capture card, USB camera): buffer size 1; pixel format, size and rate asked for
    in the order V4L2 drivers settle them (format, then size, then rate) and read back: what the device
    agreed to is in the report, with a warning when it is not what was asked.  MJPG and YUYV frames are
    taken raw and turned into grey without a colour conversion (`raw_to_grey`)."""

    def __init__(self, spec: str, size: tuple[int, int] | None = None, fourcc: str | None = None,
                 fps: float | None = None) -> None:
        import cv2

        if spec.startswith("camera:"):
            number = spec.split(":", 1)[1]
            if not number.isdigit():
                raise UsageError(f"--source {spec}: expected camera:N with N a number")
            device, index = f"/dev/video{number}", int(number)
        else:
            device, index = spec, None
        fourcc = parse_camera_format(fourcc) if fourcc else None
        if not Path(device).exists():
            raise DataError(f"camera {device} not found; check the cable/capture card and list cameras with "
                            "'v4l2-ctl --list-devices' (or 'ls /dev/video*')")
        with contextlib.suppress(AttributeError):  # OpenCV's own warning would be a second, noisier line
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        cap = cv2.VideoCapture(index if index is not None else device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise DataError(f"cannot open camera {device}: it is busy (another program holds it) or not a capture "
                            "device; close the other program or pick another /dev/videoN")
        warnings = negotiate_camera(cap, size, fourcc, fps)
        self._format = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
        self._raw = self._format in CAMERA_FORMATS and bool(cap.set(cv2.CAP_PROP_CONVERT_RGB, 0))
        self._size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self._cap = cap
        first = self._read()
        if first is None or isinstance(first, Corrupt):
            cap.release()
            raise DataError(f"camera {device} opened but gives no frames (busy, no signal on the input, or an "
                            "unsupported --camera-format/--camera-size)")
        self._first = first
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0) or None
        self.info = SourceInfo("camera", rate, None, first.shape[1], first.shape[0], live=True, label=device,
                               warnings=warnings, details={"camera_format": self._format, "raw_frames": self._raw})

    def _read(self) -> np.ndarray | Corrupt | None:
        """The next frame as uint8 grey; `Corrupt` when it does not decode, None when none came."""
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        grey = raw_to_grey(frame, self._format if self._raw else "", *self._size)
        return Corrupt("camera frame cannot be decoded") if grey is None else grey

    def __iter__(self) -> Iterator[Frame | Corrupt]:
        yield Frame(0, self._first)
        index, failures = 1, 0
        while True:
            frame = self._read()  # always drain the device: the pipeline slot keeps only the latest
            if frame is None:
                failures += 1
                if failures > 30:
                    raise DataError(f"camera {self.info.label} stopped delivering frames (unplugged or no signal)")
                yield Corrupt("camera frame not delivered")
                continue
            failures = 0
            if isinstance(frame, Corrupt):
                yield frame
                continue
            yield Frame(index, frame)
            index += 1

    def close(self) -> None:
        self._cap.release()


def negotiate_camera(cap: Any, size: tuple[int, int] | None, fourcc: str | None, fps: float | None) -> list[str]:
    """Ask an opened `cv2.VideoCapture` for `fourcc`, then `size`, then `fps` (V4L2 settles a rate for a
    size and a size for a format, so this order keeps each answer), with one buffer; read each back and
    return a warning for every value the device did not take."""
    import cv2

    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if fourcc:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fourcc))
    if size:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
    if fps:
        cap.set(cv2.CAP_PROP_FPS, float(fps))
    warnings = []
    got_format = fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
    if fourcc and got_format != fourcc:
        warnings.append(f"the camera gives {got_format or 'an unknown format'}, not the --camera-format {fourcc} asked for")
    got_size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    if size and got_size != tuple(size):
        warnings.append(f"the camera gives {got_size[0]}x{got_size[1]}, not the --camera-size {size[0]}x{size[1]} asked for")
    got_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0)
    if fps and abs(got_fps - fps) > 0.5:
        warnings.append(f"the camera gives {got_fps:g} fps, not the --fps {fps:g} asked for")
    return warnings
