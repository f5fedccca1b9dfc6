"""Synthetic chest radiographs as DICOM files, for demos, tests and the bench (no real patient data).

The image is a `medge.calibration.synthetic.cxr` phantom, stored as DX/CR with the usual
radiography encodings: 12–16 bits stored in 16 (or 8 in 8), a VOI window, optional modality
rescale, MONOCHROME1 (inverted) or MONOCHROME2, optional lossless JPEG 2000, JPEG-LS or RLE
compression.  Patient fields are
obviously fake placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from medge.calibration.synthetic.cxr import generate_cxr

COMPRESSIONS = ("jpeg2000", "jpegls", "rle")
SOP_CLASSES = {"DX": "1.2.840.10008.5.1.4.1.1.1.1", "CR": "1.2.840.10008.5.1.4.1.1.1",
               "CT": "1.2.840.10008.5.1.4.1.1.2"}


@dataclass(frozen=True)
class PhantomSpec:
    """How to encode one synthetic study."""

    size: int = 512
    modality: str = "DX"
    view: str = "PA"
    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    bits_allocated: int = 16  # 8 (with bits_stored <= 8) or 16
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    compress: str | None = None  # None | one of COMPRESSIONS (all lossless)
    junk_high_bits: bool = False  # set the unused bits above BitsStored (readers must mask them)
    seed: int = 0
    patient_id: str = "FAKE-0001"
    patient_name: str = "PHANTOM^TEST"
    accession: str = "ACC0001"


def phantom_image(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A (size, size) float32 phantom in [0, 1] and its multi-hot findings (effusion, pneumothorax, nodule,
    cardiomegaly)."""
    images, targets = generate_cxr(1, np.random.default_rng(seed), size=size)
    return images[0], targets[0]


def phantom_dataset(spec: PhantomSpec, image: np.ndarray | None = None, study_uid: str | None = None):
    """A pydicom `FileDataset` for `spec` (the image is generated from the seed unless given)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

    unit = phantom_image(spec.size, spec.seed)[0] if image is None else np.asarray(image, dtype=np.float32)
    top = 2 ** spec.bits_stored - 1
    stored = np.rint(np.clip(unit, 0.0, 1.0) * top)
    if spec.photometric == "MONOCHROME1":
        stored = top - stored
    dtype = np.uint8 if spec.bits_allocated == 8 else np.uint16
    stored = stored.astype(dtype)
    if spec.junk_high_bits and spec.bits_stored < spec.bits_allocated:
        stored |= dtype((0xFFFF << spec.bits_stored) & (2 ** spec.bits_allocated - 1))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[spec.modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = spec.modality, spec.patient_id, spec.patient_name
    ds.PatientBirthDate, ds.PatientSex = "19000101", "O"
    ds.AccessionNumber, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = spec.accession, "1", 1, 1
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20260101", "120000", ""
    ds.Manufacturer = "medge phantom"
    if spec.modality != "CT":
        ds.ViewPosition = spec.view
        ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, spec.photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = spec.bits_allocated, spec.bits_stored, spec.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = spec.rescale_slope, spec.rescale_intercept
    low, high = spec.rescale_intercept, spec.rescale_intercept + spec.rescale_slope * top
    ds.WindowCenter, ds.WindowWidth = (low + high) / 2.0, high - low + 1
    ds.PixelData = stored.tobytes()
    if spec.compress == "jpeg2000":
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    elif spec.compress == "jpegls":
        ds.compress(JPEGLSLossless, encoding_plugin="pyjpegls")
    elif spec.compress == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif spec.compress is not None:
        raise ValueError(f"unknown compression {spec.compress!r}")
    return ds


def write_phantom(path: str | Path, spec: PhantomSpec, image: np.ndarray | None = None,
                  study_uid: str | None = None) -> str:
    """Write one synthetic study to `path`; returns its SOPInstanceUID."""
    ds = phantom_dataset(spec, image, study_uid)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def write_demo_studies(folder: str | Path, count: int) -> list[Path]:
    """`count` synthetic DX studies for trying the app (study 1 is a lateral view, study 2 JPEG 2000)."""
    folder = Path(folder)
    paths = []
    for i in range(count):
        spec = PhantomSpec(seed=i, accession=f"DEMO{i:04d}", view="LL" if i == 1 else "PA",
                           compress="jpeg2000" if i == 2 else None,
                           photometric="MONOCHROME1" if i % 4 == 3 else "MONOCHROME2")
        paths.append(folder / f"demo{i:03d}.dcm")
        write_phantom(paths[-1], spec)
    return paths


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or not sys.argv[2].isdigit():
        sys.exit("usage: python -m medge.apps.xray.phantoms FOLDER COUNT")
    for written in write_demo_studies(sys.argv[1], int(sys.argv[2])):
        print(written)
