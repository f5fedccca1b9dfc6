"""Test inputs for the ultrasound app, written by the tests: mp4 videos, PNG folders, DICOM cine files."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from fixtures.browser import CHROMEDRIVER, CHROMIUM, headless_chromium  # noqa: F401 - the ultrasound tests import them from here
from fixtures.cli_checks import spawn_medge

PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PHI-12345"  # must never show up in logs, reports or on screen


def us_frames(n: int, width: int = 160, height: int = 120) -> list[np.ndarray]:
    """`n` uint8 grey B-mode frames from the app's own synthetic source."""
    from medge.apps.ultrasound.sources import SyntheticSource

    source = SyntheticSource(30, width, height, seed=1)
    return [frame.image for frame, _ in zip(source, range(n))]


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """An mp4 (mp4v) video of grey frames, written with OpenCV."""
    import cv2

    h, w = frames[0].shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def write_png_folder(folder: Path, frames: list[np.ndarray], corrupt_at: int | None = None) -> Path:
    """frame0.png … frameN.png; the frame at `corrupt_at` is replaced by bytes that are not an image."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        path = folder / f"frame{i}.png"
        if i == corrupt_at:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
        else:
            cv2.imwrite(str(path), frame)
    return folder


def write_cine(path: Path, frames: list[np.ndarray], *, frame_time_ms: float | None = 40.0,
               frame_time_vector_ms: list[float] | None = None, region: tuple[int, int, int, int] | None = None,
               delta_cm: float = 0.02, burned_in: bool = False, corrupt_frame: int | None = None,
               pixel_data: bool = True) -> Path:
    """A multi-frame US DICOM: YBR_FULL_422 JPEG Baseline (Pillow, 4:2:2), optional Sequence of
    Ultrasound Regions (one 2-D region, cm units), patient identifiers that must not leak."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage, generate_uid

    encoded = []
    for i, frame in enumerate(frames):
        rgb = np.repeat(frame[..., None], 3, axis=2)
        rgb[..., 0] = np.clip(rgb[..., 0].astype(int) + 20, 0, 255)  # a colour tint: grey conversion is tested
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=92, subsampling=1)  # subsampling=1 is 4:2:2
        data = buf.getvalue()
        encoded.append(b"not a jpeg frame" * 8 if i == corrupt_frame else data)
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundMultiFrameImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "US"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19700101"
    h, w = frames[0].shape
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
    if frame_time_vector_ms is not None:
        ds.FrameIncrementPointer = (0x0018, 0x1065)
        ds.FrameTimeVector = frame_time_vector_ms
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    if region is not None:
        item = Dataset()
        item.RegionSpatialFormat, item.RegionDataType, item.RegionFlags = 1, 1, 0
        item.RegionLocationMinX0, item.RegionLocationMinY0, item.RegionLocationMaxX1, item.RegionLocationMaxY1 = region
        item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3  # cm
        item.PhysicalDeltaX = item.PhysicalDeltaY = delta_cm
        ds.SequenceOfUltrasoundRegions = Sequence([item])
    if pixel_data:
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_mjpeg(path: Path, frames: list[np.ndarray]) -> Path:
    """A Motion-JPEG video (one JPEG per frame, each encoded by OpenCV at its own size)."""
    import cv2

    with open(path, "wb") as f:
        for frame in frames:
            f.write(cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes())
    return path


class MjpegSender:
    """A live Motion-JPEG-over-HTTP sender on 127.0.0.1 (what IP cameras and capture boxes serve),
    driven by the test: `send` frames to the connected receiver, pause (a stall), `vanish` (close
    the connection and stop listening) and `come_back` on the same port."""

    BOUNDARY = b"frame"

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.last_sent = 0.0  # time.monotonic() of the last frame sent
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self.come_back()

    def come_back(self) -> None:
        """Listen (again, on the same port) and accept the next receiver in the background."""
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self._connected.clear()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            request += chunk
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=" + self.BOUNDARY + b"\r\n\r\n")
        self._conn = conn
        self.connections += 1
        self._connected.set()

    def wait_connected(self, timeout: float = 60) -> None:
        assert self._connected.wait(timeout), "the app never connected to the stream"

    def send(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        """Send `frames` at `fps` to the connected receiver."""
        import cv2

        assert self._conn is not None
        for frame in frames:
            jpeg = cv2.imencode(".jpg", frame, [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes()
            self._conn.sendall(b"--" + self.BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                               + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            self.last_sent = time.monotonic()
            time.sleep(1.0 / fps)

    def vanish(self) -> None:
        """The source disappears: the connection closes and nothing listens on the port."""
        self._listener.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RunningApp:
    """`medge ultrasound` in a subprocess; stderr is drained in a thread and the view URL parsed from it."""

    def __init__(self, args: list[str], report: Path) -> None:
        self.report = report
        self.proc = spawn_medge(["ultrasound", *args, "--report", report],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        self.stderr: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(120) or self.url is None:
            self.proc.kill()
            raise AssertionError("the app did not start its view: " + "".join(self.stderr)[-2000:])

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "browser view at " in line:
                self.url = line.rsplit(" ", 1)[1].strip()
                self._ready.set()
        self._ready.set()

    def stop(self, sig: int | None) -> dict:
        """Send `sig` (None: let the app end by itself), wait, check the exit and return the report."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the app did not end: " + "".join(self.stderr)[-2000:]) from None
        assert self.proc.returncode == 0, "".join(self.stderr)[-2000:]
        assert "ultrasound" in out  # the summary table
        return json.loads(self.report.read_text())

    def stats(self) -> dict:
        """The live stats the view serves."""
        import urllib.request

        with urllib.request.urlopen(self.url + "stats", timeout=10) as resp:
            return json.loads(resp.read())

    def wait_stats(self, ok, timeout: float = 30) -> dict:
        """Poll the live stats until `ok(stats)`; fail with the app's stderr after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if ok(stats):
                return stats
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"stats never matched: {stats}\n" + "".join(self.stderr)[-2000:])
            time.sleep(0.05)

