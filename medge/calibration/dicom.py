"""DICOM images: modality LUT, VOI LUT / windowing, MONOCHROME1, compressed and multi-frame files.

Compressed transfer syntaxes (JPEG baseline/lossless, JPEG 2000, RLE) are decoded by pydicom with
the pylibjpeg plugins.  Each frame of a multi-frame file is one candidate sample and is decoded on
its own, so a long cine never sits in memory whole.  Truncated or corrupt files are skipped with a
reason.  Nothing here reads or reports patient identifiers: items are named by relative path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medge.calibration.preprocess import image_to_model, minmax_to_unit, raw_to_unit, window_to_unit
from medge.calibration.sampling import Candidate, SkipSample, error_detail
from medge.common.registry import import_optional

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
COLOR_PHOTOMETRICS = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"})


def looks_like_dicom(path: Path) -> bool:
    """A .dcm-style suffix, or the 'DICM' magic at byte 128 (files exported without a suffix)."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DICOM element, as float."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0]
    return float(value)


def _positive_pair(value: Any) -> list[float] | None:
    """Two finite values > 0 from a multi-valued DS element, else None."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        pair = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return pair if len(pair) == 2 and all(np.isfinite(v) and v > 0 for v in pair) else None


def pixel_spacing_mm(ds: Any) -> tuple[list[float] | None, str | None]:
    """((dx, dy) mm per pixel, None) from Pixel Spacing, else Imager Pixel Spacing corrected by the
    Estimated Radiographic Magnification Factor (PS3.3 C.8.11.7: Imager Pixel Spacing is at the
    detector); (None, warning) when the spacing is there but unusable; (None, None) when absent.

    DICOM stores spacing as row spacing (dy) then column spacing (dx); pydicom reads the values, and
    neither pydicom nor highdicom has a reader that checks them, so the checks are here."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        element = ds.get(keyword)
        if element is None or element == "":
            continue
        name = "Pixel Spacing" if keyword == "PixelSpacing" else "Imager Pixel Spacing"
        pair = _positive_pair(element)
        if pair is None:
            return None, f"{name} {str(element)[:40]!s} is not two positive numbers: areas are in px"
        if keyword == "ImagerPixelSpacing":
            factor = _positive_pair([ds.get("EstimatedRadiographicMagnificationFactor"), 1.0])
            if factor is None:
                return None, ("Imager Pixel Spacing is at the detector and the file has no valid Estimated "
                              "Radiographic Magnification Factor to bring it to the patient: areas are in px")
            pair = [v / factor[0] for v in pair]
        return [pair[1], pair[0]], None
    return None, None


def dicom_to_unit(frame: np.ndarray, ds: Any, pre: dict[str, Any]) -> np.ndarray:
    """Map one decoded frame to display intensities in [0, 1].

    Grey images: modality LUT (RescaleSlope/Intercept or Modality LUT Sequence), then the VOI
    transform, then MONOCHROME1 inversion.  The VOI transform is the model's window when its
    preprocessing says ``intensity: window`` (``minmax`` stretches each frame), otherwise the file's
    VOI LUT Sequence, else its first Window Center/Width (with VOILUTFunction), else the full
    range for 8-bit data (as for PNG files) and min–max for deeper data.
    Colour images are converted to RGB and scaled by their bit depth.
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if photometric in COLOR_PHOTOMETRICS:
        return raw_to_unit(frame, {"intensity": "unit"})
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise SkipSample(f"unsupported photometric interpretation {photometric}")
    values = apply_modality_lut(frame, ds)
    intensity = pre.get("intensity", "unit")
    if intensity in ("window", "minmax"):
        unit = raw_to_unit(values, pre)
    elif ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        bits = int(item.LUTDescriptor[2])
        lut_out = apply_voi(np.rint(values).astype(np.int64), ds)
        unit = (lut_out.astype(np.float64) / (2**bits - 1)).astype(np.float32)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")
        unit = window_to_unit(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    elif int(ds.get("BitsStored", 16)) <= 8 and values.dtype.kind == "u":
        unit = (values / float(2 ** int(ds.BitsStored) - 1)).astype(np.float32)  # 8-bit: full range, like PNGs
    else:
        unit = minmax_to_unit(values)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return unit.astype(np.float32)


def _read_header(path: Path):
    pydicom = import_optional("pydicom", what="reading DICOM files")
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        try:  # files written without the 128-byte preamble / file meta
            return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure means "not readable DICOM"
            raise SkipSample(f"not a readable DICOM file ({type(exc).__name__})") from exc
    except Exception as exc:  # noqa: BLE001 - truncated headers raise a variety of errors
        raise SkipSample(f"unreadable DICOM header ({error_detail(exc, path)})") from exc


def _decode_frame(path: Path, header: Any, index: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        frame = pixel_array(str(path), index=index)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for corrupt/truncated data
        raise SkipSample(f"cannot decode pixel data ({error_detail(exc, path)})") from exc
    if index is None and int(header.get("NumberOfFrames", 1) or 1) > 1:
        frame = frame[0]
    return frame


def dicom_candidates(path: Path, item: str, pre: dict[str, Any], target: np.ndarray | None,
                     stratum: str | None, *, max_frames: int | None = None) -> list[Candidate]:
    """One candidate per frame of the DICOM file at `path` (raises `SkipSample` for a bad header).

    `max_frames` limits how many frames of a long cine become candidates (evenly spaced).
    """
    header = _read_header(path)
    if header.get("Rows") is None or header.get("Columns") is None:
        raise SkipSample("DICOM file has no Rows/Columns; it is not an image")
    frames = int(header.get("NumberOfFrames", 1) or 1)
    indices = list(range(frames))
    if max_frames is not None and frames > max_frames:
        indices = sorted({int(round(i)) for i in np.linspace(0, frames - 1, max_frames)})

    def loader(index: int | None):
        def load() -> tuple[np.ndarray, np.ndarray | None]:
            frame = _decode_frame(path, header, index)
            return image_to_model(dicom_to_unit(frame, header, pre), pre), None

        return load

    if frames == 1:
        return [Candidate(item, loader(None), target, stratum)]
    return [Candidate(f"{item}#frame{i}", loader(i), target, stratum) for i in indices]
