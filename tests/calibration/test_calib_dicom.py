"""DICOM sources: windowing math, VOI LUT, rescale, MONOCHROME1, compression, frames, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from calib_fixtures import PATIENT_ID, PATIENT_NAME, image_meta, image_shape, write_dicom

from medge.calibration import load_data
from medge.common.errors import DataError

RAW = {"mean": (0.0,), "std": (1.0,)}  # identity normalisation: outputs are the [0, 1] intensities


def _load(path, meta=None, **kw):
    meta = meta or image_meta(**RAW)
    return load_data(str(path), meta, input_name="image", input_shape=image_shape(meta), **kw)


def _expected_linear_window(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of medge."""
    x = x.astype(np.float64)
    out = ((x - (c - 0.5)) / (w - 1) + 0.5)
    out[x <= c - 0.5 - (w - 1) / 2] = 0.0
    out[x > c - 0.5 + (w - 1) / 2] = 1.0
    return out


def test_window_center_width_and_rescale(tmp_path, ramp12):
    path = write_dicom(tmp_path / "w.dcm", ramp12, WindowCenter=2048, WindowWidth=1024)
    ds = _load(path)
    got = ds.samples[0].feeds["image"][0, 0]
    np.testing.assert_allclose(got, _expected_linear_window(ramp12, 2048, 1024), atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0 and 0 < (got == 0).mean() < 1

    # Rescale slope/intercept is applied before the window: window in modality units.
    path = write_dicom(tmp_path / "r.dcm", ramp12, RescaleSlope=2, RescaleIntercept=-100,
                       WindowCenter=4000, WindowWidth=2000)
    got = _load(path).samples[0].feeds["image"][0, 0]
    np.testing.assert_allclose(got, _expected_linear_window(ramp12 * 2.0 - 100, 4000, 2000), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path, ramp12):
    mono2 = _load(write_dicom(tmp_path / "m2.dcm", ramp12, WindowCenter=2048, WindowWidth=4096))
    mono1 = _load(write_dicom(tmp_path / "m1.dcm", ramp12, photometric="MONOCHROME1",
                              WindowCenter=2048, WindowWidth=4096))
    a, b = mono2.samples[0].feeds["image"], mono1.samples[0].feeds["image"]
    np.testing.assert_allclose(b, 1.0 - a, atol=1e-6)


def test_voi_lut_sequence_is_preferred_over_window(tmp_path, ramp12):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    lut = (65535 - np.arange(4096) * 16).astype(np.uint16)  # inverted 16-bit ramp
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", lut.tolist())
    path = write_dicom(tmp_path / "voi.dcm", ramp12, VOILUTSequence=Sequence([item]),
                       WindowCenter=100, WindowWidth=10)
    got = _load(path).samples[0].feeds["image"][0, 0]
    np.testing.assert_allclose(got, lut[ramp12] / 65535.0, atol=1e-6)


def test_model_window_overrides_file_and_mean_std(tmp_path, ramp12):
    meta = image_meta(intensity="window", window_center=1000, window_width=501, mean=(0.5,), std=(0.25,))
    path = write_dicom(tmp_path / "w.dcm", ramp12, WindowCenter=2048, WindowWidth=1024)
    got = _load(path, meta).samples[0].feeds["image"][0, 0]
    np.testing.assert_allclose(got, (_expected_linear_window(ramp12, 1000, 501) - 0.5) / 0.25, atol=1e-5)


def test_no_window_uses_minmax_and_resizes(tmp_path, ramp12):
    meta = image_meta(size=16, **RAW)
    got = _load(write_dicom(tmp_path / "plain.dcm", ramp12), meta).samples[0].feeds["image"]
    assert got.shape == (1, 1, 16, 16) and got.dtype == np.float32
    assert 0.0 <= got.min() < 0.05 and 0.95 < got.max() <= 1.0


def test_eight_bit_without_window_keeps_the_full_range(tmp_path):
    dark = np.linspace(10, 100, 32 * 32).reshape(32, 32).astype(np.uint8)  # a dark US frame stays dark
    got = _load(write_dicom(tmp_path / "us8.dcm", dark, bits=8)).samples[0].feeds["image"][0, 0]
    np.testing.assert_allclose(got, dark / 255.0, atol=1e-6)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_transfer_syntaxes_decode_like_uncompressed(tmp_path, ramp12, syntax):
    import pydicom.uid

    plain = _load(write_dicom(tmp_path / "plain.dcm", ramp12, WindowCenter=2048, WindowWidth=4096))
    path = write_dicom(tmp_path / "c.dcm", ramp12, compress=getattr(pydicom.uid, syntax),
                       WindowCenter=2048, WindowWidth=4096)
    import pydicom

    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    packed = _load(path)
    assert packed.samples[0].key == plain.samples[0].key


def test_multiframe_frames_truncated_and_junk_files_are_skipped(tmp_path, ramp12):
    folder = tmp_path / "study"
    frames = np.stack([ramp12, ramp12[::-1], ramp12[:, ::-1]])
    write_dicom(folder / "cine.dcm", frames, WindowCenter=2048, WindowWidth=4096)
    good = write_dicom(folder / "single.dcm", ramp12, WindowCenter=2048, WindowWidth=4096)
    data = good.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) - 1500])
    (folder / "junk.dcm").write_bytes(b"not a dicom at all")
    ds = _load(folder)
    rep = ds.report
    assert rep.found == 6  # 3 frames + 1 single + truncated + junk
    assert rep.used == 4 and rep.skipped == 2
    reasons = {s["item"]: s["reason"] for s in rep.skipped_items}
    assert set(reasons) == {"truncated.dcm", "junk.dcm"}
    assert "decode pixel data" in reasons["truncated.dcm"]
    assert sorted(s.source for s in ds.samples) == ["cine.dcm#frame0", "cine.dcm#frame1", "cine.dcm#frame2",
                                                   "single.dcm"]
    assert len({s.key for s in ds.samples}) == 3  # frame0 == single.dcm
    text = json.dumps(rep.to_dict()["skipped_items"]) + json.dumps([s.source for s in ds.samples])
    assert str(tmp_path) not in text
    text = json.dumps(rep.to_dict())
    assert PATIENT_NAME not in text and PATIENT_ID not in text and "Doe" not in text


def test_single_truncated_file_is_a_data_error(tmp_path, ramp12):
    good = write_dicom(tmp_path / "a.dcm", ramp12)
    data = good.read_bytes()
    (tmp_path / "a.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="no decodable samples"):
        _load(tmp_path / "a.dcm")


def test_dicom_class_subfolders_give_labels(tmp_path, ramp12):
    for i in range(3):
        write_dicom(tmp_path / "effusion" / f"{i}.dcm", ramp12 // 2 + i)
        write_dicom(tmp_path / "normal" / f"{i}.dcm", ramp12 // 2 + 10 + i)
    ds = _load(tmp_path)
    assert ds.report.labels_from == "subfolders"
    assert ds.report.class_counts == {"(none)": 3, "effusion": 3}
    t = ds.targets()
    assert t.shape == (6, 2) and t.sum() == 3


def _write_jpeg_baseline_cine(path, frames: list[np.ndarray]):
    """Colour US cine in JPEG baseline (encapsulated Pillow JPEGs), decoded by pylibjpeg."""
    import io

    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage, generate_uid

    blobs = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95, subsampling=0)
        blobs.append(buf.getvalue())
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "US", PATIENT_NAME, PATIENT_ID
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate(blobs)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_jpeg_baseline_colour_cine_frames_and_frame_limit(tmp_path):
    base = np.zeros((32, 32, 3), np.uint8)
    base[..., 0] = np.arange(32)[:, None] * 8
    base[..., 1] = 100
    base[..., 2] = np.arange(32)[None] * 4
    frames = [np.roll(base, 3 * i, axis=0) for i in range(6)]
    path = _write_jpeg_baseline_cine(tmp_path / "cine.dcm", frames)
    ds = _load(path)
    assert ds.report.kind == "dicom" and ds.report.used == 6
    got = {s.source: s.feeds["image"][0, 0] for s in ds.samples}
    for i, frame in enumerate(frames):
        luma = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        np.testing.assert_allclose(got[f"cine.dcm#frame{i}"], luma, atol=4 / 255)
    meta = image_meta(**RAW)
    limited = load_data(str(path), meta, input_name="image", input_shape=image_shape(meta), max_frames_per_file=3)
    assert sorted(s.source for s in limited.samples) == ["cine.dcm#frame0", "cine.dcm#frame2", "cine.dcm#frame5"]


def test_signed_ct_in_hounsfield_units_with_the_model_window(tmp_path):
    stored = np.linspace(-200, 1800, 32 * 32).reshape(32, 32).astype(np.int16)  # signed stored values
    path = write_dicom(tmp_path / "ct.dcm", stored, bits=16, RescaleSlope=1, RescaleIntercept=-1024)
    meta = image_meta(intensity="window", window_center=40, window_width=400, mean=(0.0,), std=(1.0,))
    got = _load(path, meta).samples[0].feeds["image"][0, 0]
    np.testing.assert_allclose(got, _expected_linear_window(stored.astype(np.float64) - 1024, 40, 400), atol=1e-6)
    assert 0 < (got == 0).mean() < 1 and 0 < (got == 1).mean() < 1
