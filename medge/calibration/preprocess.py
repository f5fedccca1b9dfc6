"""The model's own preprocessing, applied to decoded images and signals.

The schema lives in `medge.common.metadata` (``ModelMeta.preprocessing``).  Images go
raw → intensity in [0, 1] → channels → resize to H×W → ``(x - mean) / std`` → layout; signals go
leads in mV → resampled to the model's rate → windowed to the model's sample count → ``× scale``.
Every source (folders, DICOM, WFDB, arrays, synthetic) ends up here, so the same data works for
every model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medge.common.errors import DataError

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


def window_to_unit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map `values` through a DICOM VOI window (PS3.3 C.11.2.1.2/3) onto [0, 1].

    ``LINEAR``: below ``c - 0.5 - (w - 1)/2`` → 0, above ``c - 0.5 + (w - 1)/2`` → 1, else
    ``((x - (c - 0.5)) / (w - 1) + 0.5)``.  ``LINEAR_EXACT`` uses ``c`` and ``w`` as given;
    ``SIGMOID`` is ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    x = np.asarray(values, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise DataError(f"window width {width} must be > 0 for SIGMOID windowing")
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR":
        if width < 1:
            raise DataError(f"window width {width} must be >= 1 for LINEAR windowing; fix the DICOM or model window")
        center, width = center - 0.5, width - 1.0
        if width == 0:  # a one-value window is a hard threshold
            return (x > center).astype(np.float32)
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise DataError(f"window width {width} must be > 0 for LINEAR_EXACT windowing")
    else:
        raise DataError(f"unsupported VOI LUT function '{function}'; expected LINEAR, LINEAR_EXACT or SIGMOID")
    return np.clip((x - center) / width + 0.5, 0.0, 1.0).astype(np.float32)


def minmax_to_unit(values: np.ndarray) -> np.ndarray:
    """Scale `values` linearly so that min → 0 and max → 1 (a constant image becomes zeros)."""
    x = np.asarray(values, dtype=np.float64)
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise DataError("image contains NaN or infinite values; clean the data before calibration")
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def raw_to_unit(values: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """Map raw pixel values to [0, 1] following the model's ``intensity`` rule.

    ``window`` applies the model's window center/width, ``minmax`` stretches each image;
    otherwise integer data is divided by its dtype's maximum (uint8 → 255, uint16 → 65535) and
    float data is taken as already in [0, 1] (``unit``) or divided by 255 (``uint8``).
    """
    intensity = pre.get("intensity", "unit")
    arr = np.asarray(values)
    if intensity == "window":
        center, width = pre.get("window_center"), pre.get("window_width")
        if center is None or width is None:
            raise DataError("model preprocessing says intensity 'window' but has no window_center/window_width; "
                            "re-export the model with both set")
        return window_to_unit(arr, float(center), float(width))
    if intensity == "minmax":
        return minmax_to_unit(arr)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return (arr.astype(np.float64) / np.iinfo(arr.dtype).max).astype(np.float32)
    if np.issubdtype(arr.dtype, np.signedinteger):
        return minmax_to_unit(arr)
    if intensity == "uint8":
        return (arr.astype(np.float64) / 255.0).astype(np.float32)
    if intensity != "unit":
        raise DataError(f"unknown intensity rule '{intensity}' in the model metadata; "
                        "expected unit, uint8, minmax or window")
    return arr.astype(np.float32)


def _to_channels(unit: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) → (channels, H, W)."""
    if unit.ndim == 2:
        return np.repeat(unit[None], channels, axis=0)
    if unit.ndim != 3:
        raise DataError(f"image has shape {unit.shape}; expected (H, W) or (H, W, C)")
    have = unit.shape[2]
    if have == 4:  # RGBA: drop alpha
        unit, have = unit[..., :3], 3
    if have == channels:
        return np.moveaxis(unit, 2, 0)
    if have == 3 and channels == 1:
        return np.tensordot(unit, LUMA_WEIGHTS, axes=([2], [0]))[None]
    if have == 1:
        return np.repeat(np.moveaxis(unit, 2, 0), channels, axis=0)
    raise DataError(f"image has {have} channels but the model wants {channels}; convert the images first")


def resize_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (area-aware when shrinking) resize of one float plane with Pillow's 'F' mode."""
    if plane.shape == (height, width):
        return plane.astype(np.float32, copy=False)
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def _per_channel(values: Any, channels: int, name: str) -> np.ndarray:
    arr = np.asarray(values if values is not None else [0.0 if name == "mean" else 1.0], dtype=np.float32).ravel()
    if arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size != channels:
        raise DataError(f"model preprocessing has {arr.size} {name} values for {channels} channels; re-export the model")
    if name == "std" and np.any(arr == 0):
        raise DataError("model preprocessing has a zero std; re-export the model with std > 0")
    return arr


def image_to_model(unit: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """Turn an image already in [0, 1] into the model's input (no batch dim).

    Converts channels (RGB ↔ grey), resizes to the model's H×W, applies ``(x - mean) / std`` and
    returns float32 in the model's layout (``NCHW`` → (C, H, W), ``NHWC`` → (H, W, C)).
    """
    channels = int(pre.get("channels", 1))
    height, width = int(pre["height"]), int(pre["width"])
    chw = _to_channels(np.asarray(unit, dtype=np.float32), channels)
    chw = np.stack([resize_plane(p, height, width) for p in chw])
    mean = _per_channel(pre.get("mean"), channels, "mean")
    std = _per_channel(pre.get("std"), channels, "std")
    chw = (chw - mean[:, None, None]) / std[:, None, None]
    layout = str(pre.get("layout", "NCHW")).upper()
    if layout == "NHWC":
        chw = np.moveaxis(chw, 0, 2)
    elif layout != "NCHW":
        raise DataError(f"unsupported image layout '{layout}' in the model metadata; expected NCHW or NHWC")
    return np.ascontiguousarray(chw, dtype=np.float32)


def resample_signal(signal: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """Resample (leads, samples) from `rate_in` to `rate_out` Hz with a polyphase filter."""
    if abs(rate_in - rate_out) < 1e-9:
        return signal
    from fractions import Fraction

    from scipy.signal import resample_poly

    ratio = Fraction(rate_out / rate_in).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)


def signal_to_model(leads_mv: np.ndarray, pre: dict[str, Any]) -> np.ndarray:
    """Turn (leads, samples) in mV at the model's rate into the model's input (no batch dim)."""
    samples = int(pre["samples"])
    sig = np.asarray(leads_mv, dtype=np.float64)
    if sig.ndim != 2 or sig.shape[1] != samples:
        raise DataError(f"signal window has shape {sig.shape}; the model wants (leads, {samples})")
    want = len(pre.get("leads", [])) or sig.shape[0]
    if sig.shape[0] != want:
        raise DataError(f"signal has {sig.shape[0]} leads; the model wants {want} ({', '.join(pre.get('leads', []))})")
    if not np.all(np.isfinite(sig)):
        raise DataError("signal window contains NaN (missing samples)")
    sig = sig * float(pre.get("scale", 1.0))
    layout = str(pre.get("layout", "NCL")).upper()
    if layout == "NLC":
        sig = sig.T
    elif layout != "NCL":
        raise DataError(f"unsupported signal layout '{layout}' in the model metadata; expected NCL or NLC")
    return np.ascontiguousarray(sig, dtype=np.float32)


UNIT_FACTORS_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3, "nv": 1e-6}


def to_millivolts(values: np.ndarray, unit: str) -> np.ndarray:
    """Convert a lead from `unit` (mV, uV/µV, V, nV) to mV."""
    factor = UNIT_FACTORS_TO_MV.get(str(unit).strip().lower())
    if factor is None:
        raise DataError(f"unknown signal unit '{unit}'; expected mV, uV or V")
    return np.asarray(values, dtype=np.float64) * factor


def model_input_kind(pre: dict[str, Any]) -> str:
    """'image' or 'signal', checking that the preprocessing dict has what that kind needs."""
    kind = pre.get("kind")
    need = {"image": ("height", "width"), "signal": ("samples", "sample_rate_hz")}
    if kind not in need:
        raise DataError(f"model preprocessing kind is {kind!r}; expected 'image' or 'signal' (re-export the model)")
    missing = [k for k in need[kind] if pre.get(k) is None]
    if missing:
        raise DataError(f"model preprocessing lacks {', '.join(missing)}; re-export the model with medge export")
    return kind
