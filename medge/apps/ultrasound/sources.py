"""Frame sources for the ultrasound app: video files, cameras, image folders, DICOM cine, synthetic.

Every source yields `Frame`s (uint8 grey, cropped to the imaging region when the file says where
it is) or `Corrupt` markers for frames that cannot be decoded, and describes itself with
`SourceInfo` (kind, frame rate, frame count, size, mm per pixel).  `interval(i)` is the time between
frame i and i + 1 at the source's own rate, for `--realtime` pacing.  Nothing here reads or
reports patient identifiers; DICOM studies are named by a salted hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medge.apps.pipeline import Corrupt
from medge.common.errors import DataError, MedgeError, UsageError
from medge.calibration.dicom import dicom_to_unit, looks_like_dicom, pixel_spacing_mm
from medge.calibration.preprocess import LUMA_WEIGHTS
from medge.calibration.synthetic.noise import soft_step
from medge.calibration.synthetic.ultrasound import generate_us
from medge.common.registry import import_optional

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".mjpeg", ".mjpg"})
FRAME_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
SOURCE_CHOICES = ("a video file or stream URL, a folder of PNG/JPEG frames, a DICOM file, /dev/videoN, camera:N or "
                  "synthetic[:FPS[:WxH]]")
STREAM_TIMEOUT_MS = 10_000  # a stream silent this long is closed (and reopened by the feed)
STREAM_SCHEMES = ("http://", "https://", "rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://", "rtp://", "srt://")
STUDY_SALT = os.environ.get("MEDGE_ID_SALT", "medge-ultrasound")


@dataclass
class Frame:
    """One decoded frame: its index in the source, a uint8 grey image (H, W), for synthetic frames the
    true lesion mask (uint8 (H, W), all zeros when no lesion is in view) and a notice to burn into the
    overlay (e.g. that the signal just came back)."""

    index: int
    image: np.ndarray
    truth: np.ndarray | None = None
    notice: str | None = None


@dataclass
class SourceInfo:
    """What the report says about a source (no patient data)."""

    kind: str
    fps: float | None
    frames: int | None
    width: int
    height: int
    mm_per_px: float | None = None
    mm_per_px_xy: list[float] | None = None
    live: bool = False
    label: str = ""
    warnings: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class FrameSource:
    """Base: iterate for frames; `info` describes the source; `close()` releases it."""

    info: SourceInfo

    def __iter__(self) -> Iterator[Frame | Corrupt]:
        raise TypeError(f"{type(self).__name__} is not iterable")

    def interval(self, index: int) -> float:
        """Seconds between frame `index` and the next at the source's own rate."""
        return 1.0 / (self.info.fps or 30.0)

    def close(self) -> None:
        """Release the device or file."""


def to_grey_u8(image: np.ndarray) -> np.ndarray:
    """uint8 grey (H, W) from grey, BGR(A) uint8 or float [0, 1] images (BT.601 luma)."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(img.astype(np.float32, copy=False) * np.float32(255.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        import cv2

        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY) if img.shape[2] > 1 else img[..., 0]
    return np.ascontiguousarray(img)


# --- video files and streams (cameras: camera.py) ------------------------------------------------
class VideoSource(FrameSource):
    """A video file or stream (`url`: live) decoded by OpenCV; a frame that fails to decode mid-file is
    counted as corrupt.  Motion JPEG is decoded frame by frame, so a stream that changes size mid-run
    gives frames of the new size (OpenCV would scale them to the first size)."""

    def __init__(self, path: Path | None = None, url: str | None = None) -> None:
        import cv2

        name = path.name if path is not None else _redact(url or "")
        if url:  # a refused or dropped connection is reported by us, once, without the address
            os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")  # AV_LOG_FATAL; read when FFmpeg is first used
            with contextlib.suppress(AttributeError):
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS]
            self._cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, timeouts)
        else:
            self._cap = cv2.VideoCapture(str(path))
        self._mjpeg = False
        if self._cap.isOpened() and int(self._cap.get(cv2.CAP_PROP_FOURCC) or 0).to_bytes(4, "little") == b"MJPG":
            self._mjpeg = bool(self._cap.set(cv2.CAP_PROP_FORMAT, -1))  # raw packets: one JPEG each
        first = self._read() if self._cap.isOpened() else None
        if first is None or isinstance(first, Corrupt):
            self._cap.release()
            if url:
                raise DataError(f"cannot read the stream {name}: nothing answers there or OpenCV cannot decode it; "
                                "check the address and that the sender is running")
            raise DataError(f"cannot read video {name}: OpenCV cannot decode it (not a video, truncated or an "
                            "unsupported codec); re-encode it as H.264/MJPEG mp4 or avi")
        self._first = first
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0) or None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.info = SourceInfo("stream" if url else "video", fps, count if count > 0 and not url else None,
                               first.shape[1], first.shape[0], live=url is not None, label=name)

    def _read(self) -> np.ndarray | Corrupt | None:
        """The next frame as uint8 grey, `Corrupt` when it does not decode, None at the end."""
        import cv2

        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        if self._mjpeg:
            image = cv2.imdecode(frame, cv2.IMREAD_GRAYSCALE) if frame.size else None
            return Corrupt("video frame cannot be decoded") if image is None else image
        return to_grey_u8(frame)

    def __iter__(self) -> Iterator[Frame | Corrupt]:
        index, frame, failures = 0, self._first, 0
        total = self.info.frames or 0
        while True:
            if isinstance(frame, Corrupt):
                yield frame
            elif frame is not None:
                yield Frame(index, frame)
                failures = 0
            index += 1
            frame = self._read()
            if frame is None:
                failures += 1
                if index >= total or failures > 10:  # the end (or a hopelessly broken tail)
                    return
                yield Corrupt("video frame cannot be decoded")

    def close(self) -> None:
        self._cap.release()


# --- image folders ----------------------------------------------------------------------------------
class FolderSource(FrameSource):
    """PNG/JPEG frames in a folder, in file-name order (natural sort: frame2 before frame10)."""

    def __init__(self, folder: Path, fps: float | None = None) -> None:
        files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
        if not files:
            raise DataError(f"folder {folder.name} has no PNG/JPEG frames; pass a folder of .png/.jpg files or a video")
        key = lambda p: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]  # noqa: E731
        self._files = sorted(files, key=key)
        first = self._read(self._files[0])
        if first is None:
            raise DataError(f"cannot decode the first frame {self._files[0].name} in {folder.name}")
        self.info = SourceInfo("frames", fps or 30.0, len(self._files), first.shape[1], first.shape[0], label=folder.name,
                               details={"fps_from": "--fps" if fps else "default"})

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        import cv2

        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)

    def __iter__(self) -> Iterator[Frame | Corrupt]:
        for index, path in enumerate(self._files):
            image = self._read(path)
            if image is None:
                yield Corrupt("image file cannot be decoded")
                continue
            yield Frame(index, image)  # at its own size, even when it differs from the first


# --- DICOM ------------------------------------------------------------------------------------------
UNITS = {0: "none", 1: "percent", 2: "dB", 3: "cm", 4: "seconds", 5: "hertz", 6: "dB/seconds", 7: "cm/sec",
         8: "cm2", 9: "cm2/sec", 10: "cm3", 11: "cm3/sec", 12: "degrees"}  # PS3.3 C.8.5.5.1.15


def region_calibration(ds: Any, rows: int, cols: int) -> tuple[tuple[int, int, int, int] | None, list[float] | None, list[str]]:
    """The crop (x0, y0, x1, y1) and (dx, dy) mm per pixel of the first 2-D tissue region of the
    Sequence of Ultrasound Regions, with warnings.  A region that does not fit the image, or whose
    physical units are not cm, is refused: no crop, no spacing (areas in px) and a warning naming the
    problem.  Without regions, Pixel Spacing / Imager Pixel Spacing give the spacing (no crop)."""
    regions = [r for r in (ds.get("SequenceOfUltrasoundRegions") or []) if int(r.get("RegionSpatialFormat", 0) or 0) == 1]
    if not regions:
        spacing, problem = pixel_spacing_mm(ds)
        return None, spacing, [problem] if problem else []
    region = regions[0]  # 1 = 2-D tissue image
    try:
        x0, y0 = int(region.RegionLocationMinX0), int(region.RegionLocationMinY0)
        x1, y1 = int(region.RegionLocationMaxX1), int(region.RegionLocationMaxY1)
    except (AttributeError, TypeError, ValueError):
        return None, None, ["the ultrasound region has no usable Region Location: not cropped, areas are in px"]
    where = f"x {x0}–{x1}, y {y0}–{y1}"
    if not (0 <= x0 < x1 < cols and 0 <= y0 < y1 < rows):
        return None, None, [f"the ultrasound region ({where}) does not fit the {cols}×{rows} image: not cropped, "
                            "areas are in px (its spacing cannot be trusted)"]
    units = [int(region.get(k, 0) or 0) for k in ("PhysicalUnitsXDirection", "PhysicalUnitsYDirection")]
    if units != [3, 3]:
        names = "/".join(UNITS.get(u, str(u)) for u in units)
        return None, None, [f"the ultrasound region's physical units are {names}, not cm: not cropped, areas are in px"]
    deltas = [region.get("PhysicalDeltaX"), region.get("PhysicalDeltaY")]
    if not all(d is not None and np.isfinite(float(d)) and float(d) != 0 for d in deltas):
        return None, None, [f"the ultrasound region's Physical Delta X/Y ({deltas[0]}, {deltas[1]}) is missing or "
                            "zero: not cropped, areas are in px"]
    return (x0, y0, x1, y1), [abs(float(deltas[0])) * 10.0, abs(float(deltas[1])) * 10.0], []


def study_hash(ds: Any) -> str:
    """A salted hash of the study (never the patient's identifiers)."""
    uid = str(ds.get("StudyInstanceUID", "") or ds.get("SOPInstanceUID", "") or "")
    return hashlib.sha256(f"{STUDY_SALT}:{uid}".encode()).hexdigest()[:12] if uid else "unknown"


class DicomSource(FrameSource):
    """A single- or multi-frame ultrasound DICOM: paced by Frame Time / Frame Time Vector, colour → grey,
    cropped to the 2-D ultrasound region (which also gives mm per pixel) when that region is right
    (`region_calibration`)."""

    def __init__(self, path: Path) -> None:
        pydicom = import_optional("pydicom", what="reading DICOM cine files")
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - any parse failure means "not readable DICOM"
            raise DataError(f"{path.name} is not a readable DICOM file; pass an ultrasound DICOM image or cine") from None
        if ds.get("Rows") is None or ds.get("Columns") is None:
            raise DataError(f"DICOM file {path.name} is not an image (no Rows/Columns, SOP class "
                            f"{getattr(ds.get('SOPClassUID'), 'name', 'unknown')}); pass an ultrasound image or cine")
        full = pydicom.dcmread(str(path), defer_size=1024)
        if "PixelData" not in full and "FloatPixelData" not in full:
            raise DataError(f"DICOM file {path.name} has no pixel data; pass an ultrasound image or cine")
        self._path, self._ds = path, ds
        rows, cols = int(ds.Rows), int(ds.Columns)
        self._n = int(ds.get("NumberOfFrames", 1) or 1)
        self._crop, spacing, warnings = region_calibration(ds, rows, cols)
        x0, y0, x1, y1 = self._crop or (0, 0, cols - 1, rows - 1)
        self._intervals = self._frame_intervals(ds)
        fps = 1.0 / (sum(self._intervals) / len(self._intervals)) if self._intervals else None
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            warnings.append("Burned In Annotation is YES: the frames may show patient identifiers; "
                            "do not share the view or recording outside the care team")
        pixel_mm = None
        if spacing is not None:
            pixel_mm = spacing[0] if abs(spacing[0] - spacing[1]) < 1e-9 else float(np.sqrt(spacing[0] * spacing[1]))
        self.info = SourceInfo(
            "dicom", fps, self._n, x1 - x0 + 1, y1 - y0 + 1, mm_per_px=pixel_mm, mm_per_px_xy=spacing, label=study_hash(ds),
            warnings=warnings,
            details={"photometric": str(ds.get("PhotometricInterpretation", "")), "transfer_syntax":
                     str(getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "")) if hasattr(ds, "file_meta") else "",
                     "cropped_to_region": self._crop is not None, "fps_from": self._fps_from},
        )

    def _frame_intervals(self, ds: Any) -> list[float]:
        vector = ds.get("FrameTimeVector")
        if vector is not None and self._n > 1:
            values = [float(v) / 1000.0 for v in (vector if isinstance(vector, (list, tuple)) or hasattr(vector, "__len__") else [vector])]
            if len(values) == self._n and all(v >= 0 for v in values[1:]) and any(v > 0 for v in values[1:]):
                self._fps_from = "FrameTimeVector"
                return [v if v > 0 else 1 / 30 for v in values[1:]]
        frame_time = ds.get("FrameTime")
        if frame_time is not None and float(frame_time) > 0:
            self._fps_from = "FrameTime"
            return [float(frame_time) / 1000.0]
        for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
            rate = ds.get(keyword)
            if rate is not None and float(rate) > 0:
                self._fps_from = keyword
                return [1.0 / float(rate)]
        self._fps_from = "default"
        return []

    def interval(self, index: int) -> float:
        if not self._intervals:
            return 1.0 / 30.0
        return self._intervals[index % len(self._intervals)] if len(self._intervals) > 1 else self._intervals[0]

    def __iter__(self) -> Iterator[Frame | Corrupt]:
        from pydicom.pixels import pixel_array

        for index in range(self._n):
            try:
                raw = pixel_array(str(self._path), index=index if self._n > 1 else None)
                unit = dicom_to_unit(raw, self._ds, {"intensity": "unit"})
            except Exception as exc:  # noqa: BLE001 - decoders raise many types for corrupt frames
                log.debug("DICOM frame %d cannot be decoded: %s", index, type(exc).__name__)
                yield Corrupt("DICOM frame cannot be decoded")
                continue
            if unit.ndim == 3:  # RGB (YBR and palette were converted to RGB on decoding)

                unit = np.tensordot(unit[..., :3], LUMA_WEIGHTS, axes=([2], [0]))
            if self._crop is not None:
                x0, y0, x1, y1 = self._crop
                unit = unit[y0:y1 + 1, x0:x1 + 1]
            yield Frame(index, to_grey_u8(unit))


# --- synthetic --------------------------------------------------------------------------------------
class SyntheticSource(FrameSource):
    """B-mode speckle (from `medge.calibration.synthetic.ultrasound`) with a hypoechoic lesion moving
    across it; the lesion leaves the image for part of each sweep, so a pre-screen has work to do.

    Frames are made in uint8 at any size (1920×1080 at 60 fps included): the backgrounds are kept as
    uint8, a cross-fade is one `cv2.addWeighted`, and on frames taller than 540 px the smooth lesion
    shape is computed on a coarser grid and resized to its box (its true mask is that shape > 0.5)."""

    BANK = 3  # backgrounds the probe sweeps between
    HOLD = 60  # frames per background (plus a cross-fade)

    def __init__(self, fps: float = 30.0, width: int = 640, height: int = 480, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        size = max(width, height)
        bank, _, _ = generate_us(self.BANK, rng, size=size, lesion_prob=0.0)
        top, left = (size - height) // 2, (size - width) // 2
        self._bank = to_grey_u8(np.ascontiguousarray(bank[:, top:top + height, left:left + width]).reshape(-1, width)
                                ).reshape(self.BANK, height, width)
        self._w, self._h = width, height
        self._step = max(1, min(width, height) // 270)  # grid step of the lesion shape (1 up to 540 px)
        self._lobes = rng.uniform(0, 0.08, 4), rng.uniform(0, 2 * np.pi, 4)
        self.info = SourceInfo("synthetic", fps, None, width, height, label=f"synthetic:{fps:g}:{width}x{height}")

    def _lesion_geometry(self, index: int) -> tuple[float, float, float, float, float] | None:
        phase = (index % 150) / 150.0
        if phase > 0.7:
            return None
        t = phase / 0.7 * 2 * np.pi
        cx = self._w * (0.5 + 0.22 * np.sin(t))
        cy = self._h * (0.55 + 0.12 * np.sin(2 * t))
        return cx, cy, 0.11 * self._w, 0.08 * self._h, t

    def _shape(self, geometry: tuple[float, float, float, float, float], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Soft lesion shape in [0, 1] at pixel columns `xs` × rows `ys`."""
        cx, cy, a, b, t = geometry
        u, v = (xs[None, :] - cx) / a, (ys[:, None] - cy) / b
        rho, phi = np.sqrt(u * u + v * v), np.arctan2(v, u)
        amp, ph = self._lobes
        border = 1.0 + sum(amp[k] * np.cos((k + 2) * phi + ph[k] + 0.3 * t) for k in range(4))
        return soft_step(border - rho, 0.03)

    def lesion(self, index: int, box: tuple[slice, slice] | None = None) -> np.ndarray | None:
        """Soft lesion shape in [0, 1] at frame `index` (over the whole frame, or `box`), None when out of view."""
        geometry = self._lesion_geometry(index)
        if geometry is None:
            return None
        rows, cols = box or (slice(0, self._h), slice(0, self._w))
        xs = np.arange(cols.start, cols.stop, dtype=np.float32)
        ys = np.arange(rows.start, rows.stop, dtype=np.float32)
        return self._shape(geometry, xs, ys)

    def _lesion_box(self, index: int) -> tuple[slice, slice] | None:
        geometry = self._lesion_geometry(index)
        if geometry is None:
            return None
        cx, cy, a, b, _ = geometry
        y0, y1 = max(0, int(cy - 1.5 * b)), min(self._h, int(cy + 1.5 * b) + 1)
        x0, x1 = max(0, int(cx - 1.5 * a)), min(self._w, int(cx + 1.5 * a) + 1)
        return slice(y0, y1), slice(x0, x1)

    def _box_shape(self, index: int, box: tuple[slice, slice]) -> np.ndarray:
        """The lesion shape over `box`, on every `_step`-th pixel and resized to the box."""
        import cv2

        if self._step == 1:
            return self.lesion(index, box)
        rows, cols = box
        step = self._step
        xs = np.arange(cols.start, cols.stop, step, dtype=np.float32) + np.float32((step - 1) / 2)
        ys = np.arange(rows.start, rows.stop, step, dtype=np.float32) + np.float32((step - 1) / 2)
        coarse = self._shape(self._lesion_geometry(index), xs, ys)
        return cv2.resize(coarse, (cols.stop - cols.start, rows.stop - rows.start), interpolation=cv2.INTER_LINEAR)

    def __iter__(self) -> Iterator[Frame | Corrupt]:
        import cv2

        index = 0
        while True:
            k, step = divmod(index, self.HOLD)
            if step < 10:  # cross-fade from the previous background (the probe moves)
                w = (step + 1) / 11.0
                image = cv2.addWeighted(self._bank[k % self.BANK], w, self._bank[(k - 1) % self.BANK], 1.0 - w, 0.0)
            else:
                image = self._bank[k % self.BANK].copy()
            box = self._lesion_box(index)
            truth = np.zeros((self._h, self._w), np.uint8)
            if box is not None:
                shape = self._box_shape(index, box)
                roi = image[box]
                roi[...] = roi * (np.float32(1.0) - np.float32(0.75) * shape) + np.float32(0.5)
                truth[box] = shape > 0.5
            yield Frame(index, image, truth)
            index += 1


def _redact(url: str) -> str:
    """A stream URL without its user:password part (it must not reach logs or reports)."""
    return re.sub(r"//[^/@]*@", "//", url)


# --- parsing --------------------------------------------------------------------------------------
def parse_size(text: str, what: str) -> tuple[int, int]:
    """``"640x480"`` → (640, 480)."""
    m = re.fullmatch(r"(\d+)[xX×](\d+)", text.strip())
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise UsageError(f"{what} {text!r}: expected WxH such as 640x480 (each at least 16)")
    return int(m.group(1)), int(m.group(2))


def parse_synthetic(spec: str) -> tuple[float, int, int]:
    """``synthetic[:FPS[:WxH]]`` → (fps, width, height); default 30 fps at 640×480."""
    parts = spec.split(":")
    fps, (width, height) = 30.0, (640, 480)
    if len(parts) > 3:
        raise UsageError(f"--source {spec!r}: expected synthetic[:FPS[:WxH]]")
    if len(parts) >= 2 and parts[1]:
        try:
            fps = float(parts[1])
        except ValueError:
            raise UsageError(f"--source {spec!r}: FPS {parts[1]!r} is not a number") from None
        if not 0 < fps <= 1000:
            raise UsageError(f"--source {spec!r}: FPS must be in (0, 1000]")
    if len(parts) == 3:
        width, height = parse_size(parts[2], f"--source {spec}:")
    return fps, width, height


def open_source(spec: str, *, fps: float | None = None, camera_size: tuple[int, int] | None = None,
                camera_format: str | None = None) -> FrameSource:
    """Open the source named by `spec` (see `SOURCE_CHOICES`); one-line `MedgeError`s for bad ones."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return SyntheticSource(*parse_synthetic(spec))
    if spec.startswith("camera:") or re.fullmatch(r"/dev/video\d+", spec):
        from medge.apps.ultrasound.camera import CameraSource  # camera.py builds on this module's classes

        return CameraSource(spec, camera_size, camera_format, fps)
    if spec.lower().startswith(STREAM_SCHEMES):
        return VideoSource(url=spec)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"source {spec} not found; pass {SOURCE_CHOICES}")
    if path.is_dir():
        return FolderSource(path, fps)

    if looks_like_dicom(path):
        return DicomSource(path)
    if path.suffix.lower() in VIDEO_SUFFIXES or not path.suffix:
        return VideoSource(path)
    if path.suffix.lower() in FRAME_SUFFIXES:
        raise DataError(f"source {path.name} is one image; put the frames in a folder and pass the folder")
    raise MedgeError(f"source {path.name}: unknown file type '{path.suffix}'; pass {SOURCE_CHOICES}")
