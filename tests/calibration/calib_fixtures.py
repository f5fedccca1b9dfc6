"""Builders for calibration tests: minimal model metadata, DICOMs and PNGs written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medge.common.metadata import ModelMeta

PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "SECRET-PID-4711"


def image_meta(task: str = "multilabel-classification", labels=("effusion", "nodule"), size: int = 32,
               mean=(0.5,), std=(0.25,), channels: int = 1, intensity: str = "unit", layout: str = "NCHW",
               **pre) -> ModelMeta:
    """A minimal image-model description (no zoo needed)."""
    preprocessing = {"kind": "image", "modality": "CR", "channels": channels, "height": size, "width": size,
                     "layout": layout, "intensity": intensity, "window_center": None, "window_width": None,
                     "mean": list(mean), "std": list(std), **pre}
    return ModelMeta(model="test-image", task=task, labels=list(labels), input_layout=layout,
                     preprocessing=preprocessing)


def image_shape(meta: ModelMeta) -> tuple[int, ...]:
    pre = meta.preprocessing
    if pre["layout"] == "NHWC":
        return (1, pre["height"], pre["width"], pre["channels"])
    return (1, pre["channels"], pre["height"], pre["width"])


def ecg_meta(leads=("II", "V1", "V5"), rate: int = 500, samples: int = 1000, scale: float = 1.0) -> ModelMeta:
    preprocessing = {"kind": "signal", "modality": "ECG", "leads": list(leads), "sample_rate_hz": rate,
                     "samples": samples, "units": "mV", "layout": "NCL", "scale": scale}
    return ModelMeta(model="test-ecg", task="ecg-reconstruction",
                     labels=["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"],
                     input_layout="NCL", preprocessing=preprocessing)


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int = 12,
                compress: str | None = None, **attrs) -> Path:
    """Write a DICOM with identifiers that must never leak into a report."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.set_pixel_data(pixels, photometric, bits)
    for key, value in attrs.items():
        setattr(ds, key, value)
    if compress is not None:
        ds.compress(compress)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, pixels: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
