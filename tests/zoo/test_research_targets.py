"""The research architectures (issue 10) through every target, with the real CLI and runtimes:
INT8 under the clinical gate on ORT and OpenVINO, Jetson explicit-Q/DQ (under the same metric
gate) with a clean TensorRT preflight, and the mobile INT8 .tflite (or the exact LiteRT failure).
The MONAI entries ship no weights: parity gates only, no metric gate.

Each model takes minutes here (quantization with fallback, OpenVINO, LiteRT conversion), so the
whole module is slow; `scripts/research_zoo_table.py` runs the same steps and prints the table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import research_zoo_table as table  # noqa: E402  (the script is the single definition of the steps)

# LiteRT failures of the current tflite path (medge/devices/tflite_*, owned by the `npu` branch),
# as measured on this branch; a fixed one makes its test fail here, so that it is taken off the list.
TFLITE_FAILS: dict[str, str] = {
    "us-dct-vit": "quantized_dimension != 0",  # per-channel FULLY_CONNECTED weights on axis 1
    "us-xlstm-unet": "(DIV) failed to invoke",  # int8 DIV by a quantized zero (the mLSTM normaliser)
    "us-lesion-sam": "Required inputs (['point']) are missing",  # the tflite path feeds one input only
}


@pytest.mark.parametrize("name", table.MODELS + table.WEIGHTLESS)
def test_research_model_through_every_target(tmp_path, name):
    row = table.run_model(name, tmp_path, n_eval=100)
    assert not row["export_error"], row["export_error"]
    assert row["parity_max_abs"] <= 1e-4 and row["parity_batches"] == [1, 2]
    weighted = row["demo_metric"] is not None
    for backend in ("ort", "openvino"):
        gate = row[backend]
        assert not gate["error"], f"{backend}: {gate['error']}"
        if weighted:
            assert gate["passed"] is True and gate["drop"] <= table.MAX_DROP[row["metric"]], gate
    trt = row["trt"]
    assert not trt["error"] and trt["ok"] is True and trt["qdq"] > 0, trt  # explicit Q/DQ, preflight clean
    if name in TFLITE_FAILS:
        assert TFLITE_FAILS[name] in (row["tflite"]["error"] or ""), row["tflite"]
    else:
        assert not row["tflite"]["error"] and row["tflite"]["coverage"] > 0, row["tflite"]
