"""Test inputs for the ultrasound app, written by the tests: mp4 videos, PNG folders, DICOM cine files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

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
