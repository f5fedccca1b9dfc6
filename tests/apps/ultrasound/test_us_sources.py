"""Ultrasound sources in-process: DICOM cine (YBR JPEG, palette, RGB, regions, timing), folders, video, synthetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medge.apps.pipeline import Corrupt
from medge.apps.ultrasound.sources import (DicomSource, FolderSource, SyntheticSource, VideoSource, open_source,
                                           parse_synthetic)
from medge.common.errors import DataError, UsageError
from us_fixtures import PATIENT_ID, PATIENT_NAME, us_frames, write_cine, write_mp4, write_png_folder


def _pydicom_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(path)


def test_ybr_jpeg_cine_with_region_crop_spacing_and_warning(tmp_path):
    frames = us_frames(6)
    path = write_cine(tmp_path / "cine.dcm", frames, frame_time_ms=40, region=(10, 5, 149, 114), delta_cm=0.02,
                      burned_in=True)
    source = DicomSource(path)
    info = source.info
    assert (info.kind, info.frames, info.width, info.height) == ("dicom", 6, 140, 110)
    assert info.mm_per_px == pytest.approx(0.2) and info.mm_per_px_xy == pytest.approx([0.2, 0.2])
    assert info.fps == pytest.approx(25.0) and source.interval(3) == pytest.approx(0.04)
    assert info.details["fps_from"] == "FrameTime" and info.details["photometric"] == "YBR_FULL_422"
    assert any("Burned In Annotation" in w for w in info.warnings)
    assert PATIENT_NAME not in repr(info) and PATIENT_ID not in repr(info)
    out = list(source)
    assert len(out) == 6 and all(f.image.shape == (110, 140) and f.image.dtype == np.uint8 for f in out)
    # lossy JPEG of the tinted frame: grey close to the original crop
    diff = np.abs(out[0].image.astype(int) - frames[0][5:115, 10:150].astype(int))
    assert np.median(diff) < 12


def test_frame_time_vector_paces_each_frame(tmp_path):
    vector = [0, 20, 40, 60, 80]
    source = DicomSource(write_cine(tmp_path / "ftv.dcm", us_frames(5), frame_time_ms=None, frame_time_vector_ms=vector))
    assert [source.interval(i) for i in range(4)] == pytest.approx([0.02, 0.04, 0.06, 0.08])
    assert source.info.details["fps_from"] == "FrameTimeVector"
    assert source.info.fps == pytest.approx(1 / 0.05)


def test_corrupt_cine_frame_is_counted_not_fatal(tmp_path):
    source = DicomSource(write_cine(tmp_path / "bad.dcm", us_frames(5), corrupt_frame=2))
    out = list(source)
    assert len(out) == 5
    assert isinstance(out[2], Corrupt) and sum(isinstance(f, Corrupt) for f in out) == 1


def test_pydicom_us_cine_palette_and_rgb_files():
    cine = DicomSource(_pydicom_file("examples_ybr_color.dcm"))  # 30-frame YBR_FULL_422 JPEG US cine
    assert cine.info.frames == 30 and cine.info.fps == pytest.approx(30.0, rel=0.01)
    frames = list(cine)
    assert len(frames) == 30 and frames[0].image.ndim == 2
    assert frames[0].image.shape == (cine.info.height, cine.info.width)
    palette = DicomSource(_pydicom_file("examples_palette.dcm"))
    (frame,) = list(palette)
    assert frame.image.ndim == 2 and frame.image.std() > 0
    rgb = DicomSource(_pydicom_file("examples_rgb_color.dcm"))
    (frame,) = list(rgb)
    assert frame.image.shape == (240, 320)


def test_dicom_without_pixels_or_not_an_image(tmp_path):
    with pytest.raises(DataError, match="has no pixel data"):
        DicomSource(write_cine(tmp_path / "nopix.dcm", us_frames(2), pixel_data=False))
    with pytest.raises(DataError, match="is not an image"):
        DicomSource(_pydicom_file("test-SR.dcm"))


def test_folder_with_a_corrupt_frame_and_natural_order(tmp_path):
    frames = us_frames(12)
    source = FolderSource(write_png_folder(tmp_path / "f", frames, corrupt_at=4), fps=15)
    out = list(source)
    assert len(out) == 12 and isinstance(out[4], Corrupt)
    assert np.array_equal(out[10].image, frames[10])  # frame10 after frame9, not after frame1
    assert source.info.fps == 15


def test_video_file(tmp_path):
    source = VideoSource(write_mp4(tmp_path / "v.mp4", us_frames(15), fps=25))
    assert (source.info.frames, source.info.fps, source.info.width, source.info.height) == (15, 25.0, 160, 120)
    assert len([f for f in source if not isinstance(f, Corrupt)]) == 15
    source.close()


def test_synthetic_source_moves_a_lesion_and_leaves_the_view():
    source = SyntheticSource(30, 96, 64)
    present = [source.lesion(i) is not None for i in range(150)]
    assert 0 < sum(present) < 150
    a, b = source.lesion(0), source.lesion(30)
    assert not np.allclose(a, b)  # it moves
    frame = next(iter(source))
    assert frame.image.shape == (64, 96) and frame.image.dtype == np.uint8
    assert frame.truth.shape == (64, 96) and frame.truth.sum() == (a > 0.5).sum()  # the mask matches the shape
    inside, outside = frame.image[frame.truth == 1].mean(), frame.image[frame.truth == 0].mean()
    assert inside < 0.6 * outside  # hypoechoic


def test_device_that_is_not_a_camera_is_a_clear_error(capfd):
    from medge.apps.ultrasound.camera import CameraSource

    with pytest.raises(DataError, match="cannot open camera /dev/null: it is busy .* or not a capture device"):
        CameraSource("/dev/null")
    assert "WARN" not in capfd.readouterr().err


def test_source_spec_parsing_and_errors(tmp_path):
    assert parse_synthetic("synthetic") == (30.0, 640, 480)
    assert parse_synthetic("synthetic:60:320x240") == (60.0, 320, 240)
    for bad in ("synthetic:fast", "synthetic:30:big", "synthetic:0", "synthetic:1:2x2:3"):
        with pytest.raises(UsageError):
            parse_synthetic(bad)
    with pytest.raises(DataError, match="not found"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(DataError, match="camera /dev/video99 not found"):
        open_source("camera:99")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG frames"):
        open_source(str(tmp_path / "empty"))
