"""Calibration and evaluation data: sources (folders, DICOM, WFDB, NPY/NPZ, synthetic) with the
model's own preprocessing, deterministic stratified sampling and overlap checks.

Heavy readers (pydicom, wfdb, Pillow, onnx) are imported only when a source needs them.
"""

from medge.calibration.dataset import (
    DEFAULT_SAMPLES,
    DataReport,
    DataSet,
    Sample,
    check_overlap,
    load_data,
    load_data_for_onnx,
    onnx_input,
    set_sha256,
)

__all__ = [
    "DEFAULT_SAMPLES",
    "DataReport",
    "DataSet",
    "Sample",
    "check_overlap",
    "load_data",
    "load_data_for_onnx",
    "onnx_input",
    "set_sha256",
]
