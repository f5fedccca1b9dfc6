"""Decode a radiograph at the resolution the model needs, not at the detector's.

A 2048×2048 radiograph goes into a 224×224 model.  Decoding it whole and then shrinking it costs
most of the time per study (1.4 s for a JPEG 2000 one here), so `decode_reduced` returns the frame
shrunk by the largest power of two that keeps it at least the model's height and width:

* JPEG 2000: the codestream's own lower resolution level (OpenJPEG ``reduce``, through Pillow's
  ``im.reduce``).  Pillow returns 9–16-bit grey as ``I;16`` shifted up to 16 bits, so the values
  are shifted back by ``16 - precision`` (checked equal to pydicom's full decode at level 0);
* JPEG baseline (8-bit grey): libjpeg-turbo DCT scaling (Pillow's ``draft``);
* anything else (uncompressed, JPEG-LS, RLE, 12-bit JPEG, signed or colour data): pydicom's full
  decode, then one-pass OpenCV ``INTER_AREA`` (block mean) on the stored integer values.

The stored values keep their dtype and meaning, so BitsStored masking, the modality LUT, the VOI
LUT / window and MONOCHROME1 inversion (`medge.calibration.dicom.dicom_to_unit`) run unchanged
afterwards, on 64× fewer pixels.  A reduced frame is a low-pass of the full one: the model's input
differs from the full-decode path by a small, measured amount (tests/apps/xray/test_xray_decode.py).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

JPEG2000_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def reduce_factor(rows: int, cols: int, height: int, width: int) -> int:
    """The largest power of two f with ceil(rows/f) >= height and ceil(cols/f) >= width (1 when none)."""
    factor = 1
    while -(-rows // (factor * 2)) >= height and -(-cols // (factor * 2)) >= width:
        factor *= 2
    return factor


def _single_fragment_frame(ds: Any) -> bytes:
    """The first frame's encoded bytes of an encapsulated single- or multi-frame dataset."""
    from pydicom.encaps import generate_frames

    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return next(generate_frames(ds.PixelData, number_of_frames=frames))


def _j2k_precision(codestream: bytes) -> tuple[int, bool] | None:
    """(precision, signed) of the first component from the SIZ marker of a J2K codestream (or JP2)."""
    start = codestream.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(codestream) < start + 43:
        return None
    ssiz = codestream[start + 42]
    return (ssiz & 0x7F) + 1, bool(ssiz & 0x80)


def _decode_j2k(ds: Any, factor: int) -> np.ndarray | None:
    from PIL import Image

    codestream = _single_fragment_frame(ds)
    precision = _j2k_precision(codestream)
    if precision is None or precision[1] or precision[0] != int(ds.get("BitsStored", 0) or 0):
        return None  # signed, or a precision pydicom would correct against BitsStored: full decode
    image = Image.open(io.BytesIO(codestream))
    if image.mode not in ("L", "I;16"):
        return None
    image.reduce = int(factor).bit_length() - 1
    image.load()
    frame = np.asarray(image)
    if frame.dtype == np.uint16 and precision[0] < 16:
        frame = frame >> (16 - precision[0])  # Pillow scales n-bit grey up to 16 bits by a left shift
    if frame.dtype == np.uint8 and int(ds.BitsAllocated) == 16:
        frame = frame.astype(np.uint16)
    return frame


def _decode_jpeg_baseline(ds: Any, factor: int) -> np.ndarray | None:
    from PIL import Image

    image = Image.open(io.BytesIO(_single_fragment_frame(ds)))
    if image.mode != "L":
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    image.draft("L", (-(-cols // factor), -(-rows // factor)))  # DCT scaling by 1/2, 1/4 or 1/8
    frame = np.asarray(image)
    got = cols // frame.shape[1] if frame.shape[1] else 0
    return frame if got <= factor else None


def area_reduce(frame: np.ndarray, factor: int) -> np.ndarray:
    """Shrink an integer frame by `factor` in one pass (OpenCV INTER_AREA: the block mean)."""
    if factor <= 1:
        return frame
    import cv2

    rows, cols = frame.shape
    size = (max(1, -(-cols // factor)), max(1, -(-rows // factor)))
    if frame.dtype in (np.uint8, np.uint16, np.int16):
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    out = cv2.resize(frame.astype(np.float64), size, interpolation=cv2.INTER_AREA)
    return np.rint(out).astype(frame.dtype) if frame.dtype.kind in "iu" else out.astype(frame.dtype)


def decode_reduced(ds: Any, height: int, width: int, mask=None) -> tuple[np.ndarray, int, str]:
    """The first frame of `ds`, reduced to at least `height`×`width` by a power of two.

    `mask` (frame → frame) is applied to a fully decoded frame before it is shrunk (BitsStored
    masking must come before averaging).  Returns (frame, factor, how) where `how` names the path:
    ``j2k-reduce``, ``jpeg-draft``, ``area`` or ``full`` (nothing to reduce).  Raises whatever
    pydicom raises for pixel data it cannot decode.
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    factor = reduce_factor(rows, cols, height, width)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    grey = int(ds.get("SamplesPerPixel", 1) or 1) == 1 and int(ds.get("PixelRepresentation", 0) or 0) == 0
    if factor > 1 and grey:
        reduced, how = None, ""
        try:
            if syntax in JPEG2000_SYNTAXES:
                reduced, how = _decode_j2k(ds, factor), "j2k-reduce"
            elif syntax == JPEG_BASELINE and int(ds.BitsAllocated) == 8:
                reduced, how = _decode_jpeg_baseline(ds, factor), "jpeg-draft"
        except (OSError, ValueError, StopIteration):
            reduced = None  # the full decode below reports what is wrong with the data
        if reduced is not None:
            got = -(-cols // reduced.shape[1])
            reduced = mask(reduced) if mask is not None else reduced
            if got < factor:  # the codec gave a larger level than asked: finish with a block mean
                reduced = area_reduce(reduced, factor // got)
            return reduced, factor, how
    frame = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        frame = frame[0]
    if frame.ndim != 2:
        return frame, 1, "full"
    frame = mask(frame) if mask is not None else frame
    return (area_reduce(frame, factor), factor, "area") if factor > 1 else (frame, 1, "full")
